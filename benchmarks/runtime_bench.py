"""Model runtimes side by side: images/s at batch 1, 32, 64 and 256, and agreement with eager on the
whole MNIST test set.

    python benchmarks/runtime_bench.py [--runtimes eager torchscript onnx aoti onnx-int8] [--seconds 1.5]

Every runtime runs the served computation (pixels -> probabilities) in this process with the
server's thread count (cores - 1 unless --threads). Speed: interleaved rounds (every runtime once
per round, each batch size for --seconds), median over rounds, so load from other processes hits
all alike. Agreement: all 10,000 test images through each runtime against eager: predictions that
differ, the largest probability difference, and the number correct. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from server import runtimes
from training.data import load_split

BATCHES = (1, 32, 64, 256)  # 64: the server's default --max-batch-size


def torchscript(served) -> runtimes.Predict:
    """The current server default: the calibrated module traced and frozen (deprecated upstream)."""
    module = runtimes.Calibrated(served).eval()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.jit.freeze(torch.jit.trace(module, runtimes._example(2)).eval())

    def predict(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return graph(torch.from_numpy(pixels)).numpy()

    return predict


def build(name: str, served, threads: int) -> runtimes.Predict | None:
    if name == "eager":
        return runtimes.reference(served)
    if name == "torchscript":
        return torchscript(served)
    if name == "onnx-int8":
        return runtimes.build("onnx", served, threads, int8=True, check=False)
    return runtimes.build(name, served, threads)


def speed(predict: runtimes.Predict, pool: np.ndarray, batch: int, seconds: float) -> float:
    x = np.ascontiguousarray(pool[:batch])
    predict(x)
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        predict(x)
        n += 1
    return n * batch / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtimes", nargs="+", default=["eager", "torchscript", "onnx", "aoti", "onnx-int8"])
    p.add_argument("--seconds", type=float, default=1.5, help="per runtime, batch size and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: cores - 1, as the server)")
    args = p.parse_args(argv)
    threads = args.threads or max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(threads)
    loaded = load_checkpoint(DEFAULT_CHECKPOINT)
    served = loaded.served()
    split = load_split("test", download=False)
    images = split.images.numpy().reshape(len(split.images), -1)
    labels = split.labels.numpy()

    built: dict[str, runtimes.Predict] = {}
    for name in args.runtimes:
        t0 = time.perf_counter()
        predict = build(name, served, threads)
        if predict is None:
            print(f"{name}: unavailable (see the warning above)")
            continue
        built[name] = predict
        print(f"{name}: ready in {time.perf_counter() - t0:.1f} s", flush=True)

    reference = built.get("eager") or runtimes.reference(served)  # the yardstick, timed only if asked
    want = np.concatenate([reference(images[i : i + 500]) for i in range(0, len(images), 500)])
    right = (want[:, :10].argmax(1) == labels).sum()
    print(f"\nagreement with eager on all {len(images)} MNIST test images (eager: {right} correct)")
    print(f"{'runtime':<12} {'argmax differs':>15} {'max |dp|':>10} {'correct':>8}")
    for name, predict in built.items():
        got = np.concatenate([predict(images[i : i + 500]) for i in range(0, len(images), 500)])
        differ = int((got[:, :10].argmax(1) != want[:, :10].argmax(1)).sum())
        right = (got[:, :10].argmax(1) == labels).sum()
        print(f"{name:<12} {differ:15d} {float(np.abs(got - want).max()):10.2e} {right:8d}")

    rates: dict[str, dict[int, list[float]]] = {name: {b: [] for b in BATCHES} for name in built}
    for r in range(args.rounds):
        print(f"speed round {r + 1}/{args.rounds}", flush=True)
        for name, predict in built.items():
            for batch in BATCHES:
                rates[name][batch].append(speed(predict, images, batch, args.seconds))
    print(f"\nimages/s, {threads} thread(s), median of {args.rounds} interleaved rounds "
          f"(torch {torch.__version__}, {os.cpu_count()} cores, shared machine)")  # fmt: skip
    print(f"{'runtime':<12} " + " ".join(f"{'batch ' + str(b):>10}" for b in BATCHES))
    for name in built:
        med = [sorted(rates[name][b])[len(rates[name][b]) // 2] for b in BATCHES]
        print(f"{name:<12} " + " ".join(f"{x:10.0f}" for x in med))
    return 0


if __name__ == "__main__":
    sys.exit(main())
