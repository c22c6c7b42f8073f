"""`digits-train-gate`: teach a checkpoint to say "that is not a digit" (model/gate.py).

The encoder stays exactly as it is; a small head learns, from the encoder's own features, to tell
digits from letters, symbols and doodles (training/outliers.py, training split only: fonts and
Hershey hands that the benchmark never shows). Both sides are seen the two ways the server sees
images: as 28x28 arrays (MNIST, rendered outliers, augmented), and as phone photos, scans and
canvas sketches (testkit's renderers) passed through the server's own preprocessing, because
what the head must judge is preprocessing's output, with its blur, stroke widths and crops.

The threshold is chosen on the MNIST validation digits (never test): the lowest that refuses at
most `--max-loss` of the validation digits the encoder reads correctly, so the gate costs MNIST at
most about that much accuracy. The figures printed at the end (MNIST test accuracy with refusals
counted as errors, held-out outliers refused) are measured on data the gate never saw.

The same command trains the second head of model/gate.py, "several digits run together", on
touching pairs of training digits (training/touching.py) against the same digits; its threshold is
chosen the same way. `--heads` trains one of the two and keeps the other from the checkpoint.

    digits-train-gate                                   # the shipped checkpoint, in place
    digits-train-gate --checkpoint new.safetensors --out gated.safetensors
    digits-train-gate --heads several                   # only the several-digits head
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint, tensors_digest
from model.gate import NotADigitGate, encoder_outputs, gate_loss
from training import outliers, touching, tracking
from training.augment import AugmentConfig, augment
from training.data import add_data_arguments, load_split, train_val_split

STYLES = ("photo", "scan", "sketch")


def _as_user_sends(job: tuple[np.ndarray, str, int]) -> np.ndarray | None:
    """One 28x28 image drawn as a photo, scan or sketch, then preprocessed as the server does;
    None where preprocessing finds no ink (the server answers NO_DIGIT_FOUND there anyway)."""
    from preprocessing import preprocess
    from testkit.photos import phone_photo
    from testkit.robustness_set import scan, sketch

    image, style, seed = job
    rng = np.random.default_rng(seed)
    if style == "photo":
        data = phone_photo(image, rng=rng)
    elif style == "scan":
        data = scan(image, rng)[1]
    else:
        data = sketch(image, rng)[1]
    found = preprocess(data)
    return found.pixels if found.bbox is not None else None


def as_users_send(images: np.ndarray, seed: int, what: str, workers: int) -> np.ndarray:
    """`images` rendered in the three styles in turn and preprocessed, in parallel; (m, 28, 28) uint8."""
    jobs = [(img, STYLES[i % len(STYLES)], seed * 1_000_003 + i) for i, img in enumerate(images)]
    if not jobs:
        return np.zeros((0, 28, 28), np.uint8)
    with ProcessPoolExecutor(workers) as pool:
        done = list(tqdm(pool.map(_as_user_sends, jobs, chunksize=32), total=len(jobs), desc=what, unit="img"))
    kept = [x for x in done if x is not None]
    return np.stack(kept) if kept else np.zeros((0, 28, 28), np.uint8)


def floats(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images))
    return x.float().div(255).view(-1, 1, 28, 28)


@torch.no_grad()
def outputs(encoder, temperature: float, images: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scaled logits, gate features) of `images`, in chunks."""
    logits, features = [], []
    for i in tqdm(range(0, len(images), 1000), desc=what, unit="k img", leave=False):
        a, b = encoder_outputs(encoder, temperature, images[i : i + 1000])
        logits.append(a)
        features.append(b)
    return torch.cat(logits), torch.cat(features)


def fit(
    gate: NotADigitGate, pos: torch.Tensor, neg: torch.Tensor, epochs: int, seed: int, run=None, name: str = "gate"
) -> None:
    """Standardize on the training features, then AdamW on class-balanced binary cross-entropy."""
    x = torch.cat([pos, neg])
    y = torch.cat([torch.zeros(len(pos)), torch.ones(len(neg))])
    w = torch.cat([torch.ones(len(pos)), torch.full((len(neg),), len(pos) / max(1, len(neg)))])
    gate.mean.copy_(x.mean(0))
    gate.std.copy_(x.std(0) + 1e-6)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(gate.parameters(), lr=2e-3, weight_decay=1e-3)
    gate.train()
    for epoch in tqdm(range(epochs), desc=name, unit="epoch"):
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(x), 512):
            b = perm[i : i + 512]
            loss = gate_loss(gate(x[b]), y[b], w[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        tracking.log(run, {"epoch": epoch + 1, f"{name}/train_loss": total / len(x)})
    gate.eval()


def choose_threshold(scores: torch.Tensor, correct: torch.Tensor, max_loss: float) -> float:
    """The lowest threshold at which the refused, correctly read digits are at most `max_loss` of all."""
    budget = int(max_loss * len(scores))
    right = torch.sort(scores[correct], descending=True).values
    if budget >= len(right):
        return 0.5
    return float(min(max(right[budget].item() + 1e-6, 0.5), 0.999999))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="digits-train-gate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="encoder to add the gate to")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: over --checkpoint)")
    p.add_argument("--outliers", type=int, default=16000, help="non-digits drawn as 28x28 arrays (default 16000)")
    p.add_argument("--rendered", type=int, default=6000, help="digits and non-digits each, drawn as photos/scans/"
                   "sketches and preprocessed (default 6000; about 1 min per 1000 on 2 cores)")  # fmt: skip
    p.add_argument("--digits", type=int, default=None, help="MNIST training digits to learn from (default: all)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--max-loss", type=float, default=0.0005, help="validation digits the gate may refuse (0.0005)")
    p.add_argument("--heldout", type=int, default=1200, help="held-out non-digits measured at the end")
    p.add_argument("--heads", choices=("both", "gate", "several"), default="both",
                   help="which head to train; the other is kept from --checkpoint (default both)")  # fmt: skip
    p.add_argument("--pairs", type=int, default=10000, help="touching pairs framed from arrays (default 10000)")
    p.add_argument("--pairs-drawn", type=int, default=4000, help="touching pairs drawn as photos/scans/sketches "
                   "and segmented by Read; about 2/3 stay one glyph (default 4000; ~1 min per 1000)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--version", default=None, help="version stored in the file (default: the encoder's + '+gate-DATE')")
    p.add_argument("--run-dir", type=Path, default=Path("runs/gate"), help="where the wandb run is written")
    p.add_argument("--no-wandb", action="store_true", help="do not log to Weights & Biases")
    p.add_argument("--wandb-project", default="digits")
    p.add_argument("--wandb-name", default=None)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes rendering photos")
    add_data_arguments(p)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    loaded = load_checkpoint(args.checkpoint)
    encoder, temperature = loaded.model.eval(), loaded.temperature
    train, val = train_val_split(load_split("train", args.data_dir, download=not args.no_download))
    if args.digits is not None:
        train = type(train)(train.images[: args.digits], train.labels[: args.digits])
    test = load_split("test", args.data_dir, download=not args.no_download)
    rng = np.random.default_rng(args.seed)
    picked = rng.choice(len(train.images), min(args.rendered, len(train.images)), replace=False)
    digits_sent = as_users_send(train.images.numpy()[picked], args.seed, "digits as photos", args.workers)
    cfg, g = AugmentConfig(), torch.Generator().manual_seed(args.seed)
    digits = torch.cat([floats(train.images), floats(digits_sent)])
    pos = torch.cat([outputs(encoder, temperature, x, "digit features")[1] for x in (digits, augment(digits, cfg, g))])
    val_logits, val_features = outputs(encoder, temperature, floats(val.images), "validation")
    test_logits, test_features = outputs(encoder, temperature, floats(test.images), "MNIST test")
    val_right, right = val_logits.argmax(1) == val.labels, test_logits.argmax(1) == test.labels
    encoder_sha256 = tensors_digest({k: v.detach().cpu() for k, v in encoder.state_dict().items()})
    args.run_dir.mkdir(parents=True, exist_ok=True)
    params = sum(p.numel() for p in NotADigitGate(encoder.cfg.dim, hidden=args.hidden).parameters())
    run = tracking.start(args, encoder.cfg, args.run_dir, params=params * (2 if args.heads == "both" else 1),
                         disabled=args.no_wandb)  # fmt: skip
    figures: dict[str, float | int] = {"mnist_test_accuracy": float(right.float().mean())}
    gate, several = loaded.gate, loaded.several

    if args.heads in ("both", "gate"):
        bank = outliers.bank(args.outliers + args.rendered, "train", seed=args.seed)
        print(f"{len(bank)} training non-digits drawn in {time.perf_counter() - t0:.0f} s", flush=True)
        others_sent = as_users_send(bank[args.outliers :], args.seed + 1, "non-digits as photos", args.workers)
        others = torch.cat([floats(bank[: args.outliers]), floats(others_sent)])
        views = (others, augment(others, cfg, g), augment(others, cfg, g))
        neg = torch.cat([outputs(encoder, temperature, x, "non-digit features")[1] for x in views])
        gate = NotADigitGate(encoder.cfg.dim, hidden=args.hidden)
        fit(gate, pos, neg, args.epochs, args.seed, run)
        with torch.no_grad():
            gate.threshold = choose_threshold(torch.sigmoid(gate(val_features)), val_right, args.max_loss)
        gate.encoder_sha256 = encoder_sha256
        heldout = outliers.bank(args.heldout, "heldout", seed=args.seed)
        held_logits, held_features = outputs(encoder, temperature, floats(heldout), "held-out non-digits")
        with torch.no_grad():
            test_refused = torch.sigmoid(gate(test_features)) >= gate.threshold
            held_refused = torch.sigmoid(gate(held_features)) >= gate.threshold
        kept, lost = (right & ~test_refused).float().mean(), int((right & test_refused).sum())
        held_low = torch.softmax(held_logits, 1).amax(1) < 0.5
        ok, before = (held_refused | held_low).float().mean(), held_low.float().mean()
        print(f"threshold {gate.threshold:.4f} (refuses {args.max_loss:.2%} of validation digits read right at most)")
        print(f"MNIST test: accuracy {right.float().mean():.2%} without the gate, {kept:.2%} with it "
              f"({int(test_refused.sum())} refused, {lost} of them read right)")  # fmt: skip
        print(f"held-out non-digits ({len(heldout)}, as 28x28 arrays): refused {held_refused.float().mean():.1%}, "
              f"refused or under 50% {ok:.1%} (before: under 50% {before:.1%})")  # fmt: skip
        figures |= {
            "threshold": gate.threshold,
            "mnist_test_accuracy_with_gate": float(kept),
            "mnist_test_refused": int(test_refused.sum()),
            "heldout_refused": float(held_refused.float().mean()),
        }

    if args.heads in ("both", "several"):
        merged = touching.pairs(train.images.numpy(), args.pairs, args.pairs_drawn, args.seed, args.workers)
        print(f"{len(merged)} touching pairs of training digits", flush=True)
        merged_x = floats(merged)
        pair_features = torch.cat(
            [outputs(encoder, temperature, x, "pair features")[1] for x in (merged_x, augment(merged_x, cfg, g))]
        )
        several = NotADigitGate(encoder.cfg.dim, hidden=args.hidden)
        fit(several, pos, pair_features, args.epochs, args.seed + 1, run, name="several")
        with torch.no_grad():
            several.threshold = choose_threshold(torch.sigmoid(several(val_features)), val_right, args.max_loss)
        several.encoder_sha256 = encoder_sha256
        # pairs of *test* digits, framed from the arrays: never seen in training
        tests = touching.pairs(test.images.numpy(), args.heldout, 0, args.seed + 7, args.workers)
        with torch.no_grad():
            flagged = torch.sigmoid(several(outputs(encoder, temperature, floats(tests), "held-out pairs")[1]))
            on_digits = torch.sigmoid(several(test_features))
        print(f"several digits: threshold {several.threshold:.4f}; touching pairs of test digits flagged "
              f"{(flagged >= several.threshold).float().mean():.1%}, P(several) mean {flagged.mean():.2f}; "
              f"MNIST test digits flagged {int((on_digits >= several.threshold).sum())}, "
              f"P(several) mean {on_digits.mean():.4f}")  # fmt: skip
        figures |= {
            "several_threshold": several.threshold,
            "several_heldout_pairs_flagged": float((flagged >= several.threshold).float().mean()),
            "several_mnist_test_flagged": int((on_digits >= several.threshold).sum()),
        }

    out = args.out or args.checkpoint
    own = {"format", "config", "temperature", "version", "sha256", "gate"}  # written afresh by save_checkpoint
    extra = {k: v for k, v in loaded.metadata.items() if k not in own}
    extra["gate_args"] = json.dumps({k: str(v) for k, v in vars(args).items()}, sort_keys=True)
    version = args.version or f"{loaded.version.split('+')[0]}+gate-{time.strftime('%Y.%m.%d')}"
    version = save_checkpoint(out, encoder, temperature, version=version, extra=extra, gate=gate, several=several)
    tracking.finish_gate(run, figures, out, version)
    print(f"wrote {out} ({version}) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
