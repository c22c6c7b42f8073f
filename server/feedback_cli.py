"""`digits-feedback`: what the operator does with the users' corrections.

    digits-feedback stats --db feedback.sqlite3
    digits-feedback export --db replica1.sqlite3 --db replica2.sqlite3 --out data/corrections --holdout 0.2

`export` writes standard MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
and t10k-* for the held-out part), so `digits-train --extra-data DIR` and anything else that reads
MNIST reads them. Exact duplicates (same image, same label: a retried call, a replica's copy) are
kept once; an image given different labels is left out (we cannot tell who is right); "not a digit"
records are left out and counted. Which part a record falls in is decided by a hash of its image,
so it never moves between train and held-out when the export is re-run with more data.

No torch here: the store and this tool run anywhere the server runs.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from model.shape import IMAGE_SIZE, NUM_CLASSES
from server.feedback_store import NOT_A_DIGIT, FeedbackStore, Record

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
MANIFEST = "feedback-export.json"


def open_store(path: Path) -> FeedbackStore:
    if not path.is_file():
        raise SystemExit(f"digits-feedback: {path}: no such file (the server's --feedback-db)")
    return FeedbackStore(path)


# stats


@dataclass
class Stats:
    total: int = 0
    per_digit: Counter = field(default_factory=Counter)  # by the user's label; NOT_A_DIGIT included
    per_version: Counter = field(default_factory=Counter)
    per_source: Counter = field(default_factory=Counter)
    right_per_version: Counter = field(default_factory=Counter)  # the model's answer was the user's label

    def add(self, record: Record) -> None:
        self.total += 1
        self.per_digit[record.correct] += 1
        self.per_version[record.model_version or "?"] += 1
        self.per_source[record.source] += 1
        if record.correct == record.predicted:
            self.right_per_version[record.model_version or "?"] += 1

    def report(self) -> str:
        if not self.total:
            return "no records"
        lines = [f"{self.total} records"]
        label = lambda d: "not a digit" if d == NOT_A_DIGIT else str(d)  # noqa: E731
        lines.append(
            "per digit (the user's label): "
            + ", ".join(
                f"{label(d)}: {self.per_digit[d]}" for d in [*range(NUM_CLASSES), NOT_A_DIGIT] if self.per_digit[d]
            )
        )
        lines.append("per source: " + ", ".join(f"{s}: {n}" for s, n in self.per_source.most_common()))
        lines.append("per model version (records, the model's accuracy on them):")
        right = sum(self.right_per_version.values())
        for version, n in self.per_version.most_common():
            lines.append(f"  {version}: {n}, {100 * self.right_per_version[version] / n:.1f}% right")
        lines.append(f"the model's accuracy on all records: {100 * right / self.total:.1f}% ({right}/{self.total})")
        return "\n".join(lines)


def stats(paths: list[Path]) -> Stats:
    result = Stats()
    for path in paths:
        with open_store(path) as store:
            for record in store.records():
                result.add(record)
    return result


# export


@dataclass
class Export:
    train: list[tuple[bytes, int]]
    holdout: list[tuple[bytes, int]]
    records: int
    not_a_digit: int
    duplicates: int
    conflicting: int  # records left out because their image was given different labels


def in_holdout(pixels: bytes, fraction: float) -> bool:
    """Stable across runs and machines: the first 8 bytes of the image's SHA-256 as a number in [0, 1)."""
    return int.from_bytes(hashlib.sha256(pixels).digest()[:8], "big") / 2**64 < fraction


def collect(paths: list[Path], holdout: float) -> Export:
    labels: dict[bytes, Counter] = defaultdict(Counter)
    records = not_a_digit = 0
    for path in paths:
        with open_store(path) as store:
            for record in store.records():
                records += 1
                if record.correct == NOT_A_DIGIT:
                    not_a_digit += 1
                else:
                    labels[record.pixels][record.correct] += 1
    train, held = [], []
    duplicates = conflicting = 0
    for pixels, counts in labels.items():  # dict order: first seen first, so the output is reproducible
        if len(counts) > 1:
            conflicting += sum(counts.values())
            continue
        ((label, n),) = counts.items()
        duplicates += n - 1
        (held if in_holdout(pixels, holdout) else train).append((pixels, label))
    return Export(train, held, records, not_a_digit, duplicates, conflicting)


def write_idx(out: Path, prefix: str, items: list[tuple[bytes, int]]) -> list[Path]:
    """`{prefix}-images-idx3-ubyte.gz` and `{prefix}-labels-idx1-ubyte.gz`, MNIST's own format."""
    images = out / f"{prefix}-images-idx3-ubyte.gz"
    labels = out / f"{prefix}-labels-idx1-ubyte.gz"
    n = len(items)
    # mtime=0: the same records give byte-identical files (and the same SHA-256 in the manifest).
    with gzip.GzipFile(images, "wb", mtime=0) as fh:
        fh.write(struct.pack(">IIII", IMAGES_MAGIC, n, IMAGE_SIZE, IMAGE_SIZE))
        fh.write(b"".join(pixels for pixels, _ in items))
    with gzip.GzipFile(labels, "wb", mtime=0) as fh:
        fh.write(struct.pack(">II", LABELS_MAGIC, n))
        fh.write(bytes(label for _, label in items))
    return [images, labels]


def export(paths: list[Path], out: Path, holdout: float) -> dict:
    """Write the IDX files and a manifest (what went in, what was left out, checksums); returns the manifest."""
    result = collect(paths, holdout)
    out.mkdir(parents=True, exist_ok=True)
    files = write_idx(out, "train", result.train) + write_idx(out, "t10k", result.holdout)
    manifest = {
        "sources": [str(p.resolve()) for p in paths],
        "records": result.records,
        "train": len(result.train),
        "holdout": len(result.holdout),
        "holdout_fraction": holdout,
        "not_a_digit_left_out": result.not_a_digit,
        "duplicates_dropped": result.duplicates,
        "conflicting_left_out": result.conflicting,
        "files": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="digits-feedback",
        description="Look at and export the corrections users sent (the server's --feedback-db files).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stats", help="counts per digit, per model version, and the model's accuracy on them")
    s.add_argument("--db", type=Path, action="append", required=True, help="a feedback SQLite file (repeatable)")
    e = sub.add_parser(
        "export",
        help="write the corrections as MNIST IDX .gz files (train-* and held-out t10k-*)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    e.add_argument("--db", type=Path, action="append", required=True, help="a feedback SQLite file (repeatable)")
    e.add_argument("--out", type=Path, required=True, help="folder for the IDX files and feedback-export.json")
    e.add_argument("--holdout", type=fraction, default=0.2, help="fraction of the images kept for evaluation (t10k-*)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stats":
        print(stats(args.db).report())
        return 0
    manifest = export(args.db, args.out, args.holdout)
    print(
        f"{manifest['records']} records from {len(args.db)} file(s) -> {args.out}: "
        f"{manifest['train']} train, {manifest['holdout']} held out (t10k-*); left out: "
        f"{manifest['not_a_digit_left_out']} 'not a digit', {manifest['duplicates_dropped']} exact duplicates, "
        f"{manifest['conflicting_left_out']} with conflicting labels"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
