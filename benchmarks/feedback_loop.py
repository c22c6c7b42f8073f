"""The whole feedback loop, through the real server: corrections in, a better model out.

1. Read the robustness set (testkit/robustness_set.py) rendered from MNIST **test** digits through
   a real server with the shipped model; the style it reads worst is the one users would correct.
2. Render that style from MNIST **train** digits as `--corrections` user corrections: each goes
   through Predict (the server's preprocessing), and the 28x28 image of the answer goes back
   through Feedback with the true label, into the server's SQLite store.
3. `digits-feedback export` (20% held out), then `nice -n 10 digits-train --init-from <shipped>
   --extra-data <export>` on CPU, timed.
4. A second server with the fine-tuned model reads the same test renders (the pixels the first
   server's preprocessing made; preprocessing does not depend on the model) and all 10,000 MNIST
   test digits; the figures are printed side by side with the issue's targets.

    .venv/bin/python benchmarks/feedback_loop.py                 # about 20-30 minutes on 2 shared cores
    .venv/bin/python benchmarks/feedback_loop.py --per-style 100 --corrections 100 --epochs 1   # a quick look

The shipped model is never replaced: the fine-tuned one is written under --work (default: a
temporary folder, removed at the end unless --keep).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from client import DigitsClient, DigitsError
from model.checkpoint import DEFAULT_CHECKPOINT
from testkit.robustness_set import RENDERERS, render
from testkit.server_process import ServerProcess
from training.data import load_split

DIGIT_STYLES = tuple(RENDERERS)  # photo, scan, sketch: the styles with a right answer
BIN = Path(sys.executable).parent


async def read_renders(target: str, samples) -> list[bytes | None]:
    """Each rendered upload through Predict: the 28x28 the server saw, or None for "no digit found"."""
    out: list[bytes | None] = []
    async with DigitsClient(target, timeout=60) as client:
        for i in range(0, len(samples), 32):
            for r in await client.predict_batch(images=[s.data for s in samples[i : i + 32]]):
                out.append(None if isinstance(r, DigitsError) else r.pixels)
    return out


async def right_on_pixels(target: str, pixels: list[bytes | None], labels: list[int]) -> np.ndarray:
    """Per image, whether the server's model reads the already-preprocessed image right ("no digit found": no)."""
    good = [i for i, p in enumerate(pixels) if p is not None]
    right = np.zeros(len(pixels), bool)
    async with DigitsClient(target, timeout=120) as client:
        for i in range(0, len(good), 256):
            chunk = good[i : i + 256]
            for j, r in zip(chunk, await client.predict_batch(pixels=[pixels[j] for j in chunk]), strict=True):
                right[j] = not isinstance(r, DigitsError) and r.digit == labels[j]
    return right


def read_all(target: str, pixels: dict, labels: dict) -> dict[str, np.ndarray]:
    return {name: asyncio.run(right_on_pixels(target, pixels[name], labels[name])) for name in pixels}


async def send_corrections(target: str, samples, n: int) -> tuple[int, int, int]:
    """Predict each rendered train digit, then Feedback the answer's pixels with the true label.
    Returns (stored, of which the model was wrong, renders with no digit found)."""
    stored = wrong = no_digit = 0
    async with DigitsClient(target, timeout=60) as client:
        for s in samples:
            if stored == n:
                break
            try:
                answer = await client.predict_image(s.data)
            except DigitsError:
                no_digit += 1
                continue
            await client.feedback(
                answer.pixels,
                answer.digit,
                s.label,
                model_version=answer.model_version,
                source="benchmark",
                user="bench-0f3a9c",
            )
            stored += 1
            wrong += int(answer.digit != s.label)
    return stored, wrong, no_digit


def save_renders(path: Path, pixels: dict, labels: dict, variants: dict) -> None:
    """The test renders as the server saw them (None: no digit found), so a re-run skips rendering."""
    arrays = {}
    for s in pixels:
        arrays[f"{s}/found"] = np.array([p is not None for p in pixels[s]])
        arrays[f"{s}/pixels"] = np.stack([np.frombuffer(p or bytes(784), np.uint8) for p in pixels[s]])
        arrays[f"{s}/labels"] = np.array(labels[s])
        arrays[f"{s}/variants"] = np.array(variants[s])
    np.savez_compressed(path, **arrays)


def load_renders(path: Path) -> tuple[dict, dict, dict]:
    data = np.load(path)
    pixels, labels, variants = {}, {}, {}
    for s in DIGIT_STYLES:
        pixels[s] = [p.tobytes() if f else None for p, f in zip(data[f"{s}/pixels"], data[f"{s}/found"], strict=True)]
        labels[s] = data[f"{s}/labels"].tolist()
        variants[s] = data[f"{s}/variants"].tolist()
    return pixels, labels, variants


def run(cmd: list[str], timeout: float | None = None) -> float:
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, timeout=timeout)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-style", type=int, default=200, help="test renders per style (default 200)")
    p.add_argument("--corrections", type=int, default=300, help="user corrections sent through Feedback")
    p.add_argument("--style", choices=DIGIT_STYLES, default=None, help="skip the pick: correct this style")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT, help="the model to improve (not modified)")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs over --limit-train MNIST images")
    p.add_argument("--limit-train", type=int, default=6000, help="MNIST images rehearsed per epoch")
    p.add_argument("--extra-weight", type=float, default=0.25, help="share of each batch from the corrections")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--train-timeout", type=float, default=600.0, help="the fine-tuning's budget in seconds")
    p.add_argument("--work", type=Path, default=None, help="keep the store, export and run here")
    p.add_argument(
        "--reuse", action="store_true", help="with --work: reuse its test renders and the corrections already stored"
    )
    args = p.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="digits-feedback-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    db, export_dir, run_dir = work / "feedback.sqlite3", work / "export", work / "finetune"
    cache = work / f"renders-{args.per_style}-{args.seed}.npz"
    if not args.reuse:
        db.unlink(missing_ok=True)
    train, test = load_split("train", download=False), load_split("test", download=False)
    t_digits, t_labels = test.images.numpy(), test.labels.numpy()
    t_start = time.perf_counter()

    shipped = ServerProcess(model=args.model, args=["--workers", "2", "--feedback-db", str(db)])
    with shipped:
        if args.reuse and cache.is_file():
            pixels, labels, variants = load_renders(cache)
            print(f"reusing the test renders in {cache}")
        else:
            print(f"rendering {args.per_style} test uploads per style and reading them through {shipped.target}...")
            tests = {s: render(s, t_digits, t_labels, args.per_style, args.seed) for s in DIGIT_STYLES}
            pixels = {s: asyncio.run(read_renders(shipped.target, tests[s])) for s in DIGIT_STYLES}
            labels = {s: [x.label for x in tests[s]] for s in DIGIT_STYLES}
            variants = {s: [x.variant for x in tests[s]] for s in DIGIT_STYLES}
            save_renders(cache, pixels, labels, variants)
        pixels["MNIST test"] = [img.tobytes() for img in t_digits]
        labels["MNIST test"] = t_labels.tolist()
        right_before = read_all(shipped.target, pixels, labels)
        before = {name: 100.0 * r.mean() for name, r in right_before.items()}
        style = args.style or min(DIGIT_STYLES, key=lambda s: before[s])
        print(f"worst style: {style} ({before[style]:.1f}%)")

        if args.reuse and db.is_file() and sqlite3.connect(db).execute("SELECT count(*) FROM feedback").fetchone()[0]:
            stored = sqlite3.connect(db).execute("SELECT count(*) FROM feedback").fetchone()[0]
            print(f"reusing the {stored} corrections already in {db}")
        else:
            # Train digits, a seed apart from the test renders; more than needed, for the "no digit" ones.
            n = args.corrections * 11 // 10
            source = render(style, train.images.numpy(), train.labels.numpy(), n, args.seed + 1)
            stored, wrong, no_digit = asyncio.run(send_corrections(shipped.target, source, args.corrections))
            print(
                f"sent {stored} corrections of {style} through Feedback ({wrong} where the model was wrong; "
                f"{no_digit} renders had no digit found and were not sent)"
            )

    export_s = run([str(BIN / "digits-feedback"), "export", "--db", str(db), "--out", str(export_dir)])
    run([str(BIN / "digits-feedback"), "stats", "--db", str(db)])
    finetune = [
        "nice", "-n", "10", str(BIN / "digits-train"),
        "--init-from", str(args.model),
        "--extra-data", str(export_dir),
        "--extra-weight", str(args.extra_weight),
        "--run-dir", str(run_dir),
        "--epochs", str(args.epochs),
        "--limit-train", str(args.limit_train),
        "--lr", str(args.lr),
        "--warmup-epochs", "0.1",
        "--ema-decay", "0.99",
        "--device", "cpu",
        "--no-download",
        "--no-wandb",
        "--seed", str(args.seed),
    ]  # fmt: skip
    try:
        train_s = run(finetune, timeout=args.train_timeout)
    except subprocess.TimeoutExpired:
        print(f"fine-tuning did NOT finish within its budget of {args.train_timeout:.0f} s on this CPU")
        sys.exit(1)
    tuned = run_dir / "digits-encoder.safetensors"
    summary = json.loads((run_dir / "summary.json").read_text())

    with ServerProcess(model=tuned, args=["--workers", "1"]) as server:
        right_after = read_all(server.target, pixels, labels)
    after = {name: 100.0 * r.mean() for name, r in right_after.items()}

    found = {s: 100.0 * sum(p is not None for p in pixels[s]) / len(pixels[s]) for s in DIGIT_STYLES}
    print(f"\n== feedback loop: {stored} {style} corrections -> fine-tuned {args.model.name} (shared 2-core CPU) ==")
    print(f"export {export_s:.1f} s; fine-tuning {train_s:.0f} s on CPU (budget {args.train_timeout:.0f} s)")
    print(f"{'':22s} {'before':>8s} {'after':>8s} {'change':>8s}   target")
    for name in [style, *[s for s in DIGIT_STYLES if s != style], "MNIST test"]:
        change = after[name] - before[name]
        if name == style:
            ceiling = f" (ceiling {found[style]:.1f}%: renders with a digit found)"
            target = f">= +3.0 points{ceiling}: {'MET' if change >= 3 else 'NOT MET'}"
        elif name == "MNIST test":
            target = f">= 99.40%: {'MET' if after[name] >= 99.40 else 'NOT MET'}"
        else:
            target = f"drop <= 0.5 points: {'MET' if change >= -0.5 else 'NOT MET'}"
        n = len(t_labels) if name == "MNIST test" else args.per_style
        print(f"{name + f' ({n})':22s} {before[name]:7.2f}% {after[name]:7.2f}% {change:+7.2f}   {target}")
    per_variant: dict[str, list[int]] = defaultdict(list)
    for i, variant in enumerate(variants[style]):
        per_variant[variant].append(i)
    for variant, idx in sorted(per_variant.items()):
        b, a = 100.0 * right_before[style][idx].mean(), 100.0 * right_after[style][idx].mean()
        print(f"  {variant + f' ({len(idx)})':20s} {b:7.2f}% {a:7.2f}% {a - b:+7.2f}")
    ft = summary["finetune"]
    held = json.loads((export_dir / "feedback-export.json").read_text())["holdout"]
    if ft["before"]["holdout_accuracy"] is not None:
        print(
            f"held-out corrections ({held}, from train digits): {100 * ft['before']['holdout_accuracy']:.2f}% -> "
            f"{100 * ft['after']['holdout_accuracy']:.2f}%"
        )
    print(f"(total {time.perf_counter() - t_start:.0f} s; work dir {work}{'' if args.work else ', removed'})")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
