"""How much of the model's accuracy survives real photos and sketches: preprocessing vs a naive resize.

Renders the robustness set (testkit/robustness_set.py) from MNIST *test* digits, runs
`preprocessing.preprocess` + the model and a naive baseline (grayscale, invert if light, resize to
28x28) + the same model side by side, and prints per-style and per-variant accuracy, the rejection
rate on negatives, the MNIST-re-encoded-at-other-sizes control, and latency on one core.

    .venv/bin/python benchmarks/preprocess_robustness.py            # default: about 2-3 minutes
    .venv/bin/python benchmarks/preprocess_robustness.py --per-style 100 --reference knn

`--reference knn` adds a second classifier (k-nearest neighbours over the MNIST training set) that
shares none of the model's training: where it reads our output correctly and the model does not,
the model, not the preprocessing, is what fails that style.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from preprocessing import PreprocessError, preprocess
from preprocessing.mnist_style import ImageTooLargeError
from testkit.robustness_set import STYLES, photo, reencoded, render
from training.data import load_split

TARGETS = {"photo": 98.0, "scan": 99.0, "sketch": 98.5}


def naive(data: bytes) -> np.ndarray:
    """The baseline: grayscale, invert if light, resize to 28x28."""
    img = Image.open(io.BytesIO(data)).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return 255 - a if a.mean() > 127 else a


class Classifier:
    """The checkpoint: calibrated probabilities are softmax(logits / temperature)."""

    def __init__(self, path: Path) -> None:
        loaded = load_checkpoint(path)
        self.model, self.temperature, self.version = loaded.model, loaded.temperature, loaded.version

    @torch.no_grad()
    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255.0).view(-1, 1, 28, 28)
        probs = torch.cat([torch.softmax(self.model(b) / self.temperature, 1) for b in x.split(512)])
        conf, pred = probs.max(1)
        return pred.numpy(), conf.numpy()


class Knn:
    """3-nearest neighbours on lightly blurred MNIST training images: a model-independent reader."""

    def __init__(self) -> None:
        train = load_split("train", download=False)
        self.x = self._prep(train.images.numpy())
        self.y = train.labels.numpy()

    @staticmethod
    def _prep(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(a, dtype=np.float32) / 255.0).view(-1, 1, 28, 28)
        k = torch.tensor([0.25, 0.5, 0.25])
        t = torch.nn.functional.conv2d(t, (k[:, None] * k[None, :]).view(1, 1, 3, 3), padding=1).flatten(1)
        return torch.nn.functional.normalize(t, dim=1)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        q = self._prep(pixels)
        out = []
        for chunk in q.split(256):
            idx = (chunk @ self.x.T).topk(3, dim=1).indices.numpy()
            votes = self.y[idx]
            out.append(np.array([np.bincount(v, minlength=10).argmax() for v in votes]))
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def run_preprocess(data: bytes) -> np.ndarray | None:
    try:
        result = preprocess(data)
    except PreprocessError:
        return None
    return result.pixels if result.digit_found else None


def robustness(args: argparse.Namespace, clf: Classifier, knn: Knn | None, digits, labels) -> None:
    print(f"\n== robustness set: {args.per_style} per style, seed {args.seed} ==")
    header = f"{'style / variant':34s} {'n':>5s} {'preprocess':>11s} {'naive':>7s} {'found':>7s}"
    print(header + (f" {'knn(ours)':>10s} {'knn(src)':>9s}" if knn else "") + f" {'target':>7s}")
    for style in STYLES:
        samples = render(style, digits, labels, args.per_style, args.seed)
        ours = [run_preprocess(s.data) for s in samples]
        found = np.array([p is not None for p in ours])
        batch = np.stack([p if p is not None else np.zeros((28, 28), np.uint8) for p in ours])
        pred, conf = clf(batch)
        base_pred, _ = clf(np.stack([naive(s.data) for s in samples]))
        ref = knn(batch) if knn else None
        src = knn(digits[[s.source for s in samples]]) if knn and style != "negative" else None
        if style == "negative":
            rejected = 100.0 * (~found).mean()
            confs = conf[found]
            extra = f", accepted ones' mean confidence {confs.mean():.2f}" if found.any() else ""
            print(f"{'negative':34s} {len(samples):5d}   rejected {rejected:5.1f}% (target >= 95%){extra}")
            print(f"{'':34s}         naive baseline never rejects: every negative becomes a guess")
            for v in sorted({s.variant for s in samples}):
                m = np.array([s.variant == v for s in samples])
                print(f"  {v:32s} {m.sum():5d}   rejected {100.0 * (~found[m]).mean():5.1f}%")
            continue
        y = np.array([s.label for s in samples])
        ok = found & (pred == y)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(samples):
            groups[s.variant].append(i)
        rows = [(style, list(range(len(samples))))] + [(f"  {v}", groups[v]) for v in sorted(groups)]
        for name, idx in rows:
            i = np.array(idx)
            line = (
                f"{name:34s} {len(i):5d} {100 * ok[i].mean():10.1f}% {100 * (base_pred[i] == y[i]).mean():6.1f}%"
                f" {100 * found[i].mean():6.1f}%"
            )
            if ref is not None:
                line += f" {100 * (found[i] & (ref[i] == y[i])).mean():9.1f}% {100 * (src[i] == y[i]).mean():8.1f}%"
            print(line + (f" {TARGETS[style]:6.1f}%" if name == style else ""))


def reencode_check(args: argparse.Namespace, clf: Classifier, knn: Knn | None, digits, labels) -> None:
    n = args.reencode
    print(f"\n== MNIST test digits re-encoded as PNGs of other sizes ({n} digits) ==")
    d, y = digits[:n], labels[:n]
    base = (clf(d)[0] == y).mean() * 100
    knn_base = (knn(d) == y).mean() * 100 if knn else None
    print(f"{'28x28 arrays straight to the model':40s} {base:6.2f}%" + (f"   knn {knn_base:6.2f}%" if knn else ""))
    for side in args.sizes:
        ours = [run_preprocess(reencoded(x, side)) for x in d]
        found = np.array([p is not None for p in ours])
        batch = np.stack([p if p is not None else np.zeros((28, 28), np.uint8) for p in ours])
        acc = ((clf(batch)[0] == y) & found).mean() * 100
        naive_acc = (clf(np.stack([naive(reencoded(x, side)) for x in d]))[0] == y).mean() * 100
        line = (
            f"{f'{side}x{side} PNG -> preprocess':40s} {acc:6.2f}%  ({acc - base:+.2f} points; target within 0.2)"
            f"   naive {naive_acc:6.2f}%"
        )
        if knn:
            k = ((knn(batch) == y) & found).mean() * 100
            line += f"   knn {k:6.2f}% ({k - knn_base:+.2f})"
        print(line)


def _timed(fn, data: bytes, runs: int) -> np.ndarray:
    fn(data)  # warm caches and lazy imports
    out = np.empty(runs)
    for i in range(runs):
        t = time.perf_counter()
        fn(data)
        out[i] = time.perf_counter() - t
    return out * 1000


def latency(args: argparse.Namespace, digits) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print("\n== latency on one core (preprocessing only, ms) ==")
    rng = np.random.default_rng(args.seed)
    for (w, h), runs, target in (((640, 480), args.latency_runs, 8.0), ((4000, 3000), args.latency_runs // 4, 60.0)):
        _, data = photo(digits[0], rng, size=(w, h))
        ours, base = _timed(preprocess, data, runs), _timed(naive, data, runs)
        p50, p99 = np.percentile(ours, [50, 99])
        b50 = np.percentile(base, 50)
        print(
            f"{w}x{h} JPEG ({len(data) // 1024} KiB): p50 {p50:6.2f}  p99 {p99:6.2f}  (target p50 <= {target:.0f})"
            f"   naive p50 {b50:6.2f}  ratio {p50 / b50:4.2f}x"
        )
    bomb = _bomb_png(100_000, 100_000)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        try:
            preprocess(bomb)
            print("decompression bomb: NOT refused")
            return
        except ImageTooLargeError:
            times.append((time.perf_counter() - t) * 1000)
    print(f"decompression bomb (100000x100000 PNG header, {len(bomb)} bytes): refused, p50 {np.median(times):.2f} ms"
          f"  max {max(times):.2f} ms over {len(times)} tries")


def _bomb_png(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels and whose data is one tiny compressed row."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (w + 1))) + chunk(
        b"IEND", b""
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-style", type=int, default=200, help="samples rendered per style (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rendered set (default 0)")
    parser.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint (default: shipped)")
    parser.add_argument("--reencode", type=int, default=1000, help="MNIST test digits in the re-encode check")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 42, 56, 112, 280], help="re-encode sizes")
    parser.add_argument("--latency-runs", type=int, default=200, help="timed runs for the 640x480 JPEG")
    parser.add_argument("--reference", choices=["none", "knn"], default="none", help="add a kNN reader column")
    parser.add_argument("--skip", nargs="*", default=[], choices=["robustness", "reencode", "latency"])
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    clf = Classifier(args.model)
    test = load_split("test", download=False)
    digits, labels = test.images.numpy(), test.labels.numpy()
    print(f"model {args.model} version {clf.version} (temperature {clf.temperature:.3f})")
    knn = Knn() if args.reference == "knn" else None
    t0 = time.perf_counter()
    if "robustness" not in args.skip:
        robustness(args, clf, knn, digits, labels)
    if "reencode" not in args.skip:
        reencode_check(args, clf, knn, digits, labels)
    if "latency" not in args.skip:
        latency(args, digits)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
