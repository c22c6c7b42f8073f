"""How much of the model's accuracy survives real photos and sketches: preprocessing vs a naive resize.

Renders the robustness set (testkit/robustness_set.py) from MNIST *test* digits, runs
`preprocessing.preprocess` + the model and a naive baseline (grayscale, invert if light, resize to
28x28) + the same model side by side, and prints per-style and per-variant accuracy, the rejection
rate on negatives, the MNIST-re-encoded-at-other-sizes control, and latency on one core.

    .venv/bin/python benchmarks/preprocess_robustness.py            # default: about 2-3 minutes
    .venv/bin/python benchmarks/preprocess_robustness.py --per-style 100 --reference knn

Issue 11 adds numbers of 2-6 test digits read with Read's pipeline (whole-number and per-digit
accuracy, calibration error of the whole-reading confidence, per style), single digits on ruled and
squared notebook paper and tight crops, and Read's latency through a real server; `--quick` runs all of
it in a couple of minutes, `--fit-confidence` fits Read's confidence map on validation digits.

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
from model.shape import NOT_A_DIGIT_INDEX, SEVERAL_DIGITS_INDEX
from preprocessing import PreprocessError, preprocess
from preprocessing.mnist_style import ImageTooLargeError
from preprocessing.reading import read
from server import reading as read_answer
from testkit.robustness_set import (
    NUMBER_STYLES,
    RENDERERS,
    STYLES,
    compose,
    photo,
    reencoded,
    render,
    render_numbers,
    tight_crop,
)
from testkit.stats import edit_distance, percentile
from training.data import load_split, train_val_split

TARGETS = {"photo": 98.0, "scan": 99.0, "sketch": 98.5}
# issue 11: whole numbers read right, per style (touching = pairs whose inks overlap)
NUMBER_TARGETS = {
    "scan": 97.0,
    "photo": 95.0,
    "photo-ruled": 95.0,
    "photo-squared": 95.0,
    "sketch": 95.0,
    "touching": 85.0,
    "lines": None,
}


def naive(data: bytes) -> np.ndarray:
    """The baseline: grayscale, invert if light, resize to 28x28."""
    img = Image.open(io.BytesIO(data)).convert("L").resize((28, 28), Image.Resampling.BILINEAR)
    a = np.asarray(img, dtype=np.uint8)
    return 255 - a if a.mean() > 127 else a


class Classifier:
    """The checkpoint as the server runs it: calibrated probabilities softmax(logits / temperature),
    the not-a-digit gate, whose refusals come back as digit NOT_A_DIGIT_INDEX, and the several-digits
    head, whose flags come back as SEVERAL_DIGITS_INDEX (Predict's SEVERAL_DIGITS; never right)."""

    def __init__(self, path: Path) -> None:
        loaded = load_checkpoint(path)
        self.served, self.temperature, self.version = loaded.served(), loaded.temperature, loaded.version
        self.threshold = loaded.gate.threshold if loaded.gate is not None else 1.1
        self.several_threshold = loaded.several.threshold if loaded.several is not None else 1.1

    @torch.no_grad()
    def _outputs(self, pixels) -> np.ndarray:
        x = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255.0).view(-1, 1, 28, 28)
        return torch.cat([self.served(b) for b in x.split(512)]).numpy()

    def _digits(self, out: np.ndarray) -> np.ndarray:
        pred = out[:, :NOT_A_DIGIT_INDEX].argmax(1)
        pred[out[:, SEVERAL_DIGITS_INDEX] >= self.several_threshold] = SEVERAL_DIGITS_INDEX
        pred[out[:, NOT_A_DIGIT_INDEX] >= self.threshold] = NOT_A_DIGIT_INDEX
        return pred

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self._outputs(pixels)
        pred = self._digits(out)
        return pred, out[np.arange(len(out)), pred]

    def rows(self, pixels: list[np.ndarray]) -> list[tuple[int, float, list[float]]]:
        """What the server's batcher answers per image: (digit, confidence, probabilities)."""
        if not pixels:
            return []
        out = self._outputs(np.stack(pixels))
        pred = self._digits(out)
        return [(int(d), float(o[d]), o.tolist()) for d, o in zip(pred, out, strict=True)]


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
            refused = ~found | (pred == NOT_A_DIGIT_INDEX)  # no ink found, or the gate said "not a digit"
            rejected = 100.0 * refused.mean()
            confs = conf[~refused]
            extra = f", accepted ones' mean confidence {confs.mean():.2f}" if (~refused).any() else ""
            print(f"{'negative':34s} {len(samples):5d}   rejected {rejected:5.1f}% (target >= 95%){extra}")
            print(f"{'':34s}         naive baseline never rejects: every negative becomes a guess")
            for v in sorted({s.variant for s in samples}):
                m = np.array([s.variant == v for s in samples])
                print(f"  {v:32s} {m.sum():5d}   rejected {100.0 * refused[m].mean():5.1f}%")
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


# --- numbers (issue 11): Read = preprocessing.reading + the model + server.reading's choice ----------


def read_number(clf: Classifier, data: bytes) -> tuple[str, float, float]:
    """(text, calibrated confidence, raw confidence) exactly as the server's Read computes them; ("", 0, 0)
    when nothing is found."""
    try:
        slots = read(data, max_pixels=40_000_000)
    except PreprocessError:
        return "", 0.0, 0.0
    if not slots:
        return "", 0.0, 0.0
    wire = [(s.separator, [[(d.pixels, d.box) for d in o] for o in s.options], list(s.priors)) for s in slots]
    rows = clf.rows([d.pixels for s in slots for o in s.options for d in o])
    chosen = read_answer.choose(wire, rows)
    if chosen.refused:  # the server answers NOT_A_DIGIT: no reading
        return "", 0.0, 0.0
    return chosen.text, chosen.confidence, chosen.raw_confidence


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error over equal-width confidence bins (as digits-eval computes it)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (confidence > lo) & (confidence <= hi)
        if m.any():
            total += m.mean() * abs(confidence[m].mean() - correct[m].mean())
    return float(total)


def numbers(args: argparse.Namespace, clf: Classifier, digits, labels) -> None:
    n = args.numbers
    print(f"\n== numbers of 2-6 MNIST test digits (Read), {n} per style, seed {args.seed} ==")
    print(f"{'style':16s} {'n':>5s} {'whole':>7s} {'digits':>7s} {'ECE':>6s} {'mean conf':>9s} {'target':>7s}")
    all_conf, all_ok = [], []
    for style in NUMBER_STYLES:
        samples = render_numbers(style, digits, labels, n, args.seed)
        got = [read_number(clf, s.data) for s in samples]
        ok = np.array([g[0] == s.text for g, s in zip(got, samples, strict=True)])
        conf = np.array([g[1] for g in got])
        truth = [s.text.replace("\n", "").replace(" ", "") for s in samples]
        errors = sum(edit_distance(g[0].replace("\n", "").replace(" ", ""), t) for g, t in zip(got, truth, strict=True))
        per_digit = 100.0 * max(0.0, 1.0 - errors / sum(len(t) for t in truth))
        target = NUMBER_TARGETS[style]
        print(
            f"{style:16s} {len(samples):5d} {100 * ok.mean():6.1f}% {per_digit:6.1f}% {100 * ece(conf, ok):5.1f}%"
            f" {conf.mean():9.2f} " + (f"{target:6.1f}%" if target else "   (none)")
        )
        if args.show_errors:
            for g, s in list(zip(got, samples, strict=True)):
                if g[0] != s.text:
                    print(f"    {s.variant:28s} {s.text!r:>16s} read {g[0]!r} ({g[1]:.2f})")
        all_conf.append(conf)
        all_ok.append(ok)
    conf, ok = np.concatenate(all_conf), np.concatenate(all_ok)
    print(f"{'all styles':16s} {len(ok):5d} {100 * ok.mean():6.1f}% {'':7s} {100 * ece(conf, ok):5.1f}%"
          f" {conf.mean():9.2f}   ECE target <= 3%")
    # Lone digits through Read too (their own confidence map): what `digits-predict` prints for a photo of one
    lone = [s for style in RENDERERS for s in render(style, digits, labels, n, args.seed)]
    got = [read_number(clf, s.data) for s in lone]
    ok = np.array([g[0] == str(s.label) for g, s in zip(got, lone, strict=True)])
    conf = np.array([g[1] for g in got])
    print(f"{'lone digits':16s} {len(ok):5d} {100 * ok.mean():6.1f}% {'':7s} {100 * ece(conf, ok):5.1f}%"
          f" {conf.mean():9.2f}   (photos, scans, sketches through Read)")


def _fit_map(raw: list[float], ok: list[bool]) -> tuple[float, float]:
    """sigmoid(A * logit(p) + B) by maximum likelihood."""
    z = torch.logit(torch.tensor(raw, dtype=torch.float64).clamp(1e-6, 1 - 1e-6))
    target = torch.tensor(ok, dtype=torch.float64)
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=200)

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(ab[0] * z + ab[1], target)
        value.backward()
        return value

    opt.step(loss)
    a, b = (float(v) for v in ab.detach())
    return a, b


def fit_confidence(args: argparse.Namespace, clf: Classifier) -> None:
    """Fit server.reading's maps sigmoid(A * logit(p) + B) on MNIST *validation* digits: CALIBRATION on
    numbers of every style, CALIBRATION_ONE on lone digits (photos, scans, sketches) read as one digit.
    The server uses the second for every reading of one digit."""
    _, val = train_val_split(load_split("train", download=False))
    d, y = val.images.numpy(), val.labels.numpy()
    numbers = [(s.data, s.text) for style in NUMBER_STYLES for s in render_numbers(style, d, y, args.numbers,
                                                                                   args.seed + 1)]  # fmt: skip
    lone = [(s.data, str(s.label)) for style in RENDERERS for s in render(style, d, y, args.per_style,
                                                                           args.seed + 1)]  # fmt: skip
    print("\n== whole-reading confidence maps, fitted on validation digits ==")
    for name, samples in (("CALIBRATION", numbers), ("CALIBRATION_ONE", lone)):
        raw, ok = [], []
        for data, truth in samples:
            text, _, p = read_number(clf, data)
            if name == "CALIBRATION" or sum(c.isdigit() for c in text) == 1:
                raw.append(p)
                ok.append(text == truth)
        a, b = _fit_map(raw, ok)
        r, right = np.array(raw), np.array(ok)
        fitted = np.array([read_answer.calibrated(p, (a, b)) for p in raw])
        print(f"{name} = ({a:.4f}, {b:.4f})   # server/reading.py; {len(ok)} readings, {100 * right.mean():.1f}% "
              f"right; ECE raw {100 * ece(r, right):.1f}% -> fitted {100 * ece(fitted, right):.1f}%")


def notebook_and_crops(args: argparse.Namespace, clf: Classifier, digits, labels) -> None:
    """Single digits through Predict's preprocessing: plain vs ruled vs squared photos of the same digits,
    tight crops, and how often a single digit is wrongly called SEVERAL_DIGITS."""
    n = args.per_style
    print(f"\n== single digits on notebook paper and tight crops ({n} each) ==")
    idx = np.random.default_rng([args.seed, 7]).integers(0, len(digits), n)
    accs = {}
    for paper in ("plain", "ruled", "squared"):
        rng = np.random.default_rng([args.seed, 8])  # the same photos but for the paper
        got = [preprocess(photo(digits[j], rng, paper=paper)[1]) for j in idx]
        found = np.array([g.digit_found for g in got])
        several = np.array([g.several for g in got])
        pred, _ = clf(np.stack([g.pixels for g in got]))
        accs[paper] = 100.0 * (found & ~several & (pred == labels[idx])).mean()
        line = f"photo on {paper:8s} paper {accs[paper]:6.1f}%  (found {100 * found.mean():5.1f}%"
        line += f", wrongly SEVERAL_DIGITS {100 * several.mean():4.1f}%)"
        if paper != "plain":
            line += f"  {accs[paper] - accs['plain']:+.1f} points vs plain (target within 1)"
        print(line)
    rng = np.random.default_rng([args.seed, 9])
    samples = [tight_crop(digits[j], rng) for j in idx]
    got = [preprocess(data) for _, data in samples]
    found = np.array([g.digit_found for g in got])
    pred, _ = clf(np.stack([g.pixels for g in got]))
    ok = found & (pred == labels[idx])
    found_share = 100 * found.mean()
    print(f"tight crops (ink to the border)    {100 * ok.mean():6.1f}%  (found {found_share:5.1f}%; target >= 99%)")
    for v in sorted({v for v, _ in samples}):
        m = np.array([s[0] == v for s in samples])
        print(f"  {v:32s} {m.sum():4d} {100 * ok[m].mean():6.1f}%")
    several = []
    for style in ("photo", "scan", "sketch"):
        got = [preprocess(s.data) for s in render(style, digits, labels, n, args.seed)]
        flagged = clf(np.stack([g.pixels for g in got]))[0] == SEVERAL_DIGITS_INDEX  # the several-digits head
        several += [g.several or bool(f) for g, f in zip(got, flagged, strict=True)]
    print(f"single digits (photo/scan/sketch) wrongly refused as SEVERAL_DIGITS: {100 * np.mean(several):.1f}%")


def read_latency(args: argparse.Namespace, digits, labels) -> None:
    """Read of a 640x480 photo of a 4-digit number through a real server at idle, end to end."""
    import asyncio

    from client import DigitsClient
    from testkit.server_process import ServerProcess

    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(digits), 4)
    strip = compose([digits[i] for i in idx], [0.25, 0.25, 0.25], rng)
    _, data = photo(strip, rng, ink="black", size=(640, 480))
    single = photo(digits[0], np.random.default_rng(args.seed), ink="black", size=(640, 480))[1]

    async def timed(target: str) -> tuple[list[float], list[float], str]:
        out_read, out_predict = [], []
        async with DigitsClient(target, timeout=10) as client:
            reading = await client.read_image(data)
            await client.predict_image(single)
            for _ in range(args.latency_runs // 4):
                t = time.perf_counter()
                await client.read_image(data)
                out_read.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                await client.predict_image(single)
                out_predict.append((time.perf_counter() - t) * 1000)
        return out_read, out_predict, reading.text

    with ServerProcess(model=args.model, args=["--workers", "1"]) as server:
        times, predict_times, text = asyncio.run(timed(server.target))
    truth = "".join(str(int(labels[i])) for i in idx)
    print(f"\n== Read through a server at idle, 640x480 JPEG of a 4-digit number ({truth!r}, read {text!r}) ==")
    print(f"Read    p50 {percentile(times, 50):6.1f} ms  p90 {percentile(times, 90):6.1f} ms  (target p50 <= 30 ms)")
    print(f"Predict p50 {percentile(predict_times, 50):6.1f} ms  (one digit, 640x480, same server, for comparison)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-style", type=int, default=200, help="samples rendered per style (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rendered set (default 0)")
    parser.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint (default: shipped)")
    parser.add_argument("--reencode", type=int, default=1000, help="MNIST test digits in the re-encode check")
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 42, 56, 112, 280], help="re-encode sizes")
    parser.add_argument("--latency-runs", type=int, default=200, help="timed runs for the 640x480 JPEG")
    parser.add_argument("--reference", choices=["none", "knn"], default="none", help="add a kNN reader column")
    parser.add_argument("--numbers", type=int, default=200, help="numbers rendered per number style (default 200)")
    parser.add_argument("--show-errors", action="store_true", help="print every misread number")
    parser.add_argument(
        "--fit-confidence", action="store_true", help="fit Read's confidence map on validation digits and exit"
    )
    parser.add_argument("--quick", action="store_true", help="a couple of minutes: fewer samples and runs")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["robustness", "reencode", "latency", "numbers", "notebook", "read-latency"],
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.per_style, args.numbers, args.reencode, args.latency_runs = 60, 40, 300, 60

    torch.set_num_threads(1)
    clf = Classifier(args.model)
    test = load_split("test", download=False)
    digits, labels = test.images.numpy(), test.labels.numpy()
    print(f"model {args.model} version {clf.version} (temperature {clf.temperature:.3f})")
    knn = Knn() if args.reference == "knn" else None
    t0 = time.perf_counter()
    if args.fit_confidence:
        fit_confidence(args, clf)
        return
    if "numbers" not in args.skip:
        numbers(args, clf, digits, labels)
    if "notebook" not in args.skip:
        notebook_and_crops(args, clf, digits, labels)
    if "read-latency" not in args.skip:
        read_latency(args, digits, labels)
    if "robustness" not in args.skip:
        robustness(args, clf, knn, digits, labels)
    if "reencode" not in args.skip:
        reencode_check(args, clf, knn, digits, labels)
    if "latency" not in args.skip:
        latency(args, digits)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
