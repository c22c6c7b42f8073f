"""`digits-train`: train the digit encoder on MNIST and write a self-contained checkpoint.

Runs on CPU, one GPU, or several processes under `torchrun` (DistributedDataParallel). The
validation split carved from the training set picks the best epoch and fits the calibration
temperature; the test set is read once, at the end, for the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from model.checkpoint import resolve_device, save_checkpoint
from model.encoder import DigitEncoder, EncoderConfig
from training import finetune, outlier_exposure, tracking
from training.augment import AugmentConfig, augment
from training.data import MnistFileError, add_data_arguments, default_data_dir, load_split, train_val_split
from training.heads import Carried, carry
from training.metrics import collect_logits, fit_temperature, report

log = logging.getLogger("digits.train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="digits-train",
        description="Train the digit encoder on MNIST. "
        "Launch with `torchrun --nproc_per_node N -m training.train` for several processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = EncoderConfig()
    add_data_arguments(p)
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path("runs/default"),
        help="where the checkpoint, resume state and wandb files go",
    )
    p.add_argument("--resume", action="store_true", help="continue from run-dir/last.pt")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (split across processes)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=2.0)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument(
        "--ema-decay", type=float, default=0.999, help="weight EMA used for validation and export; 0 turns it off"
    )
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--augment-strength", type=float, default=1.0, help="scales every augmentation range")
    p.add_argument("--val-size", type=int, default=5000)
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training images (smoke tests)")
    p.add_argument(
        "--limit-eval", type=int, default=None, help="use only the first N validation/test images (smoke tests)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="bf16 autocast (auto: on for CUDA)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    p.add_argument(
        "--version", default=None, help="model version stored in the checkpoint (default: from the weights' hash)"
    )
    f = p.add_argument_group("fine-tuning from users' corrections (see digits-feedback export)")
    f.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="start from this checkpoint (its architecture; the model flags are ignored); the last epoch is kept",
    )
    f.add_argument("--extra-data", type=Path, default=None, help="folder of IDX files from `digits-feedback export`")
    f.add_argument(
        "--drop-heads",
        action="store_true",
        help="do not carry --init-from's not-a-digit gate and several-digits head over (they are kept, with "
        "thresholds chosen again, where they still work on the fine-tuned encoder: training/heads.py)",
    )
    f.add_argument(
        "--extra-weight", type=float, default=0.25, help="share of every batch taken from --extra-data (0..1)"
    )
    o = p.add_argument_group("outlier exposure: letters, symbols and doodles pushed towards a flat softmax")
    o.add_argument(
        "--outliers",
        action="store_true",
        help="add non-digit images (training/outliers.py, training split) to every batch",
    )
    o.add_argument("--outlier-weight", type=float, default=0.5, help="weight of the outlier loss (uniform target)")
    o.add_argument(
        "--outlier-temperature",
        type=float,
        default=1.0,
        help="the outlier loss sees logits / this: the calibration temperature the model will get (the shipped "
        "model's is about 0.55), so that outliers come out flat after calibration, not only before it",
    )
    o.add_argument("--outlier-ratio", type=float, default=0.5, help="outlier images per digit image in a batch")
    o.add_argument("--outlier-count", type=int, default=20000, help="outliers rendered once, then sampled from")
    p.add_argument("--no-wandb", action="store_true", help="do not log to Weights & Biases")
    p.add_argument("--wandb-project", default="digits")
    p.add_argument("--wandb-name", default=None)
    g = p.add_argument_group("model")
    g.add_argument("--patch-size", type=int, default=d.patch_size)
    g.add_argument("--dim", type=int, default=d.dim)
    g.add_argument("--depth", type=int, default=d.depth)
    g.add_argument("--heads", type=int, default=d.heads)
    g.add_argument("--mlp-ratio", type=float, default=d.mlp_ratio)
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--pool", choices=["cls", "mean"], default=d.pool)
    g.add_argument("--pos-embedding", choices=["learned", "sinusoidal"], default=d.pos_embedding)
    return p.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def lr_lambda(warmup_steps: int, total_steps: int, floor: float = 0.01):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


class Distributed:
    """Rank bookkeeping; a single process is world size 1 and every call is a no-op."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()


def train(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    ddp = Distributed(device)
    if device.type == "cuda" and ddp.world > 1:
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif ddp.world > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ddp.world))
    seed_everything(args.seed)
    use_amp = args.amp == "on" or (args.amp == "auto" and device.type == "cuda")

    data_dir = args.data_dir or default_data_dir()
    full_train = load_split("train", data_dir, download=not args.no_download)
    train_split, val_split = train_val_split(full_train, args.val_size)
    train_split = train_split.subset(args.limit_train)
    val_split = val_split.subset(args.limit_eval)

    cfg = EncoderConfig(
        patch_size=args.patch_size,
        dim=args.dim,
        depth=args.depth,
        heads=args.heads,
        mlp_ratio=args.mlp_ratio,
        dropout=args.dropout,
        pool=args.pool,
        pos_embedding=args.pos_embedding,
    )
    extra = finetune.load_extra(args.extra_data) if args.extra_data else None
    n_extra = finetune.extra_count(max(1, args.batch_size // ddp.world), args.extra_weight) if extra else 0
    oe = (
        outlier_exposure.OutlierExposure.from_args(args, max(1, args.batch_size // ddp.world))
        if args.outliers
        else None
    )
    if args.init_from:
        from model.checkpoint import load_checkpoint

        start = load_checkpoint(args.init_from)
        cfg, model = start.config, start.model.to(device)
    else:
        model = DigitEncoder(cfg).to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema_decay)) if args.ema_decay > 0 else None
    net = DistributedDataParallel(model) if ddp.world > 1 else model

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.999),
    )
    per_rank_batch = max(1, args.batch_size // ddp.world)
    steps_per_epoch = math.ceil(len(train_split) / ddp.world / per_rank_batch)
    total_steps = steps_per_epoch * args.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(int(args.warmup_epochs * steps_per_epoch), total_steps)
    )

    run_dir: Path = args.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "last.pt"
    best_path = run_dir / "best.safetensors"
    start_epoch, best = 0, {"val_accuracy": -1.0, "val_loss": float("inf"), "epoch": -1}
    if args.resume and state_path.is_file():
        # weights_only: the resume file holds tensors and plain containers, nothing executable
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        if ddp.main:
            log.info("resumed from %s at epoch %d", state_path, start_epoch + 1)
    elif args.resume and ddp.main:
        log.info("no %s yet: starting fresh", state_path)

    run = None
    if ddp.main:
        log.info("model: %s, %d parameters, device %s, world size %d", cfg, model.num_parameters(), device, ddp.world)
        run = tracking.start(args, cfg, run_dir, params=model.num_parameters(), disabled=args.no_wandb)

    aug_cfg = AugmentConfig().scaled(args.augment_strength)
    history = []
    for epoch in range(start_epoch, args.epochs):
        net.train()
        # one permutation per epoch shared by all ranks (same seed), each rank takes its stride
        g = torch.Generator().manual_seed(args.seed * 1000 + epoch)
        perm = torch.randperm(len(train_split), generator=g)[ddp.rank :: ddp.world]
        aug_gen = torch.Generator(device=device).manual_seed(args.seed * 1000 + epoch * 10 + ddp.rank)
        extra_gen = torch.Generator().manual_seed(args.seed * 1000 + epoch * 10 + ddp.rank + 5)
        oe_gen = torch.Generator().manual_seed(args.seed * 1000 + epoch * 10 + ddp.rank + 7)
        t0, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}", disable=not ddp.main, unit="step")
        for step in bar:
            idx = perm[step * per_rank_batch : (step + 1) * per_rank_batch]
            if len(idx) == 0:
                idx = perm[:per_rank_batch]  # ranks must take the same number of steps
            xb, yb = train_split.images[idx], train_split.labels[idx]
            if extra is not None:
                xb, yb = finetune.mix(xb, yb, extra.train, n_extra, extra_gen)
            n_digits = len(xb)
            if oe is not None:
                xb = torch.cat([xb, oe.sample(oe_gen)])
            x = xb.to(device, non_blocking=True).unsqueeze(1).float().div_(255)
            y = yb.to(device, non_blocking=True)
            if not args.no_augment:
                x = augment(x, aug_cfg, aug_gen)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                all_logits = net(x)
                logits = all_logits[:n_digits]
                loss = F.cross_entropy(logits.float(), y, label_smoothing=args.label_smoothing)
                if oe is not None:
                    out_loss = outlier_exposure.uniform_loss(all_logits[n_digits:].float() / args.outlier_temperature)
                    loss = loss + args.outlier_weight * out_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            if step % 20 == 0:
                extra_post = {"oe": f"{out_loss.item():.3f}"} if oe is not None else {}
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", **extra_post)
        bar.close()

        if ddp.main:
            eval_model = ema.module if ema is not None else model
            val_logits = collect_logits(eval_model, val_split, device=device)
            val = report(val_logits, val_split.labels)
            row = {
                "epoch": epoch + 1,
                "train/loss": loss_sum / seen,
                "train/accuracy": correct / seen,
                "val/loss": val.loss,
                "val/accuracy": val.accuracy,
                "lr": scheduler.get_last_lr()[0],
                "epoch_seconds": time.time() - t0,
            }
            history.append(row)
            tracking.log(run, row)
            tqdm.write(
                f"epoch {epoch + 1}: train loss {row['train/loss']:.4f} acc {row['train/accuracy']:.4f} | "
                f"val loss {val.loss:.4f} acc {val.accuracy:.4f} | {row['epoch_seconds']:.0f}s"
            )
            # Fine-tuning keeps the last epoch: MNIST validation alone would favour the unchanged start.
            if args.init_from or (val.accuracy, -val.loss) > (best["val_accuracy"], -best["val_loss"]):
                best = {"val_accuracy": val.accuracy, "val_loss": val.loss, "epoch": epoch + 1}
                save_checkpoint(best_path, eval_model, version="best-so-far")
            state = {
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "best": best,
            }
            torch.save(state, state_path.with_suffix(".tmp"))
            state_path.with_suffix(".tmp").replace(state_path)
        ddp.barrier()

    result: dict = {}
    if ddp.main:
        result = finish(args, cfg, device, best_path, val_split, data_dir, run, history, best, extra, oe)
    ddp.barrier()
    ddp.close()
    return result


def finish(args, cfg, device, best_path, val_split, data_dir, run, history, best, extra=None, oe=None) -> dict:
    """Pick the best epoch, fit the temperature on validation, report on test, export."""
    from model.checkpoint import load_checkpoint

    model = load_checkpoint(best_path, device=device).model
    val_logits = collect_logits(model, val_split, device=device)
    temperature = fit_temperature(val_logits, val_split.labels)
    test = load_split("test", data_dir, download=not args.no_download).subset(args.limit_eval)
    test_logits = collect_logits(model, test, device=device, progress=True, desc="test")
    test_report = report(test_logits, test.labels, temperature)
    uncalibrated = report(test_logits, test.labels, 1.0)
    comparison: dict = {}
    if args.init_from or extra is not None:
        comparison = compare(args, model, test, extra, device)
    if oe is not None:
        comparison["outliers"] = outlier_exposure.compare(args, model, temperature, device)
    out = args.run_dir / "digits-encoder.safetensors"
    carried = Carried(None, None, {})
    if args.init_from and not args.drop_heads:
        full = load_split("train", data_dir, download=not args.no_download)
        digits = train_val_split(full, args.val_size)[0].images.numpy()  # the heads re-align on training digits
        carried = carry(load_checkpoint(args.init_from), model, temperature, val_split, args.seed, train_images=digits)
        if carried.figures:
            print(carried.report(out))
            comparison["heads"] = {f"{key}_{name}": value for key, row in carried.figures.items()
                                   for name, value in row.items()}  # fmt: skip
    version = save_checkpoint(
        out,
        model,
        temperature=temperature,
        version=args.version,
        extra={
            "best_epoch": str(best["epoch"]),
            "val_accuracy": f"{best['val_accuracy']:.6f}",
            "test_accuracy": f"{test_report.accuracy:.6f}",
            "test_loss": f"{test_report.loss:.6f}",
            "test_ece": f"{test_report.ece:.6f}",
            "train_args": json.dumps({k: str(v) for k, v in vars(args).items()}, sort_keys=True),
            "data": json.dumps(data_seen(args, data_dir, extra, oe), sort_keys=True),
            **({"finetune": json.dumps(comparison, sort_keys=True)} if comparison else {}),
        },
        gate=carried.gate,
        several=carried.several,
    )
    summary = {
        "checkpoint": str(out),
        "version": version,
        "best_epoch": best["epoch"],
        "val_accuracy": best["val_accuracy"],
        "temperature": temperature,
        "test": test_report.as_dict(),
        "test_ece_uncalibrated": uncalibrated.ece,
        "history": history,
        **({"finetune": comparison} if comparison else {}),
    }
    (args.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    tracking.summary(run, comparison)
    tracking.finish(run, test_report, test_logits, test, temperature, out, version)
    print(
        f"test accuracy {test_report.accuracy:.4%}  loss {test_report.loss:.4f}  "
        f"ECE {test_report.ece:.4%} (T={temperature:.3f}; uncalibrated {uncalibrated.ece:.4%})\n"
        f"checkpoint: {out}  version {version}"
    )
    if carried.gate is None or carried.several is None:
        named = (("not-a-digit gate", carried.gate), ("several-digits head", carried.several))
        missing = " and ".join(name for name, head in named if head is None)
        print(f"it has no {missing} (letters would be read as digits, touching digits as one): "
              f"digits-train-gate --checkpoint {out}")  # fmt: skip
    return summary


def data_seen(args, data_dir: Path, extra, oe=None) -> dict:
    """What the checkpoint learnt from: MNIST, and the corrections (their checksums) and the start point."""
    seen: dict = {"mnist": str(Path(data_dir).resolve()), "limit_train": args.limit_train}
    if extra is not None:
        seen["extra"] = {**extra.describe(), "weight": args.extra_weight}
    if oe is not None:
        seen["outliers"] = oe.describe()
    if args.init_from:
        from model.checkpoint import read_metadata

        meta = read_metadata(args.init_from)
        seen["init_from"] = {"path": str(args.init_from), "version": meta.get("version"), "sha256": meta.get("sha256")}
    return seen


def compare(args, model, test, extra, device) -> dict:
    """MNIST test and held-out-correction accuracy of the starting checkpoint and of the result."""
    from model.checkpoint import load_checkpoint

    if extra is None:
        empty = test.subset(0)
        extra = finetune.ExtraData(Path("."), empty, empty)
    after = finetune.accuracies(model, test, extra, device)
    before = (
        finetune.accuracies(load_checkpoint(args.init_from, device=device).model, test, extra, device)
        if (args.init_from)
        else {k: None for k in after}
    )
    print(finetune.format_comparison(before, after, len(extra.holdout)))
    return {"before": before, "after": after}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        train(args)
    except (RuntimeError, MnistFileError) as exc:  # no GPU, unreadable data: one clear line, no traceback
        print(f"digits-train: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted; resume with: digits-train --resume --run-dir {args.run_dir}", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
