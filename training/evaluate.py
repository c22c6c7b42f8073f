"""`digits-eval`: how good, how honest and how fast a checkpoint is, on MNIST test (or validation)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from model.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_checkpoint, resolve_device
from training.data import MnistFileError, add_data_arguments, default_data_dir, load_split, train_val_split
from training.metrics import ECE_BINS, collect_logits, report, throughput


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="digits-eval",
        description="Evaluate a digits checkpoint: loss, accuracy, per-class accuracy, confusion matrix, "
        f"calibration error ({ECE_BINS} bins) and inference throughput.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT, help="safetensors checkpoint")
    add_data_arguments(p)
    p.add_argument("--split", choices=["test", "val"], default="test")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--batch-size", type=int, default=256, help="batch size for evaluation and the throughput figure")
    p.add_argument("--device", default="auto")
    p.add_argument("--throughput-seconds", type=float, default=3.0, help="0 skips the throughput measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    loaded = load_checkpoint(args.model, device=device)
    data_dir = args.data_dir or default_data_dir()
    if args.split == "test":
        split = load_split("test", data_dir, download=not args.no_download)
    else:
        split = train_val_split(load_split("train", data_dir, download=not args.no_download))[1]
    split = split.subset(args.limit)
    logits = collect_logits(loaded.model, split, batch_size=args.batch_size, device=device, progress=not args.json)
    rep = report(logits, split.labels, loaded.temperature)
    result = {
        "model": str(args.model),
        "version": loaded.version,
        "parameters": loaded.model.num_parameters(),
        "split": args.split,
        "images": len(split),
        **rep.as_dict(),
        "ece_uncalibrated": report(logits, split.labels, 1.0).ece,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if args.throughput_seconds > 0:
        result["images_per_second"] = throughput(loaded.model, args.batch_size, device, args.throughput_seconds)
        result["throughput_batch_size"] = args.batch_size
    return result


def format_report(r: dict) -> str:
    lines = [
        f"model        {r['model']} (version {r['version']}, {r['parameters']:,} parameters)",
        f"split        {r['split']}, {r['images']:,} images",
        f"loss         {r['loss']:.4f} (calibrated, no label smoothing)",
        f"accuracy     {r['accuracy']:.4%}  ({round((1 - r['accuracy']) * r['images'])} errors)",
        f"calibration  ECE {r['ece']:.3%} at temperature {r['temperature']:.3f} "
        f"(uncalibrated {r['ece_uncalibrated']:.3%})",
        "per class    " + "  ".join(f"{d}:{a:.2%}" for d, a in enumerate(r["per_class_accuracy"])),
        "confusion (rows = true digit, columns = predicted)",
        "       " + "".join(f"{d:>6}" for d in range(10)),
    ]
    lines += [f"    {d}  " + "".join(f"{n:>6}" for n in row) for d, row in enumerate(r["confusion"])]
    if "images_per_second" in r:
        lines.append(
            f"throughput   {r['images_per_second']:,.0f} images/s at batch {r['throughput_batch_size']} "
            f"on {r['device']} ({r['threads']} threads)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = evaluate(args)
    except (CheckpointError, MnistFileError, RuntimeError) as exc:
        print(f"digits-eval: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(result) if args.json else format_report(result))


if __name__ == "__main__":
    main()
