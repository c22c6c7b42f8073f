"""`digits-predict IMAGE... [--server TARGET]`: read image files through the server (Read) and
print, per file, the digits in reading order (a digit or a whole number) and the confidence;
`--one-digit` classifies each file as one digit through PredictStream (fast for big folders).
Exit code 1 if any file failed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from client import DigitsClient, DigitsError, Prediction, Reading

TOKEN_ENV = "DIGITS_API_TOKEN"
CHUNK = 1024  # files read and sent per PredictStream call (bounds what is held in memory)
CONCURRENT = 8  # files in flight at once with Read


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="digits-predict",
        description="Send image files to a digits server; print what each reads (a digit or a number) and how sure.",
        epilog=f"The token, if the server requires one, is read from {TOKEN_ENV} (never a flag: it would show in ps).",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG/JPEG/... files: a digit or a number each")
    p.add_argument(
        "--server",
        default="127.0.0.1:50051",
        help="gRPC target: HOST:PORT, dns:///NAME:PORT (every address the name has), or a list of replicas "
        "ipv4:IP:PORT,IP:PORT; calls go round-robin over them (default %(default)s)",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help=f"seconds per stream of up to {CHUNK} images, retries included"
    )
    p.add_argument("--tls-ca", type=Path, default=None, help="PEM root certificate(s): connect with TLS")
    p.add_argument(
        "--one-digit", action="store_true", help="each file is one digit: classify with PredictStream instead of Read"
    )
    return p


def describe(reading: Reading) -> str:
    """One line per file: the text (lines joined by " / "), its confidence, and the doubtful digits."""
    text = reading.text.replace("\n", " / ")
    if len(reading.digits) == 1:
        d = reading.digits[0]
        second, second_p = d.runner_up
        return f"{text} (confidence {reading.confidence:.1%}; runner-up {second} {second_p:.1%})"
    line = f"{text} (confidence {reading.confidence:.1%})"
    for i, d in reading.doubtful:
        second, second_p = d.runner_up
        line += f"; digit {i + 1} is {d.digit} ({d.confidence:.0%}) or {second} ({second_p:.0%})"
    return line


async def read_files(c: DigitsClient, paths: list[Path]) -> int:
    """Read, a few files in flight at once; printed in the order the files were given. Returns the failures."""
    limit = asyncio.Semaphore(CONCURRENT)

    async def one(path: Path) -> Reading | DigitsError | OSError:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return exc
        async with limit:
            try:
                return await c.read_image(data)
            except DigitsError as exc:
                return exc

    failures = 0
    for path, r in zip(paths, await asyncio.gather(*(one(p) for p in paths)), strict=True):
        if isinstance(r, OSError):
            failures += 1
            print(f"{path}: cannot read file: {r.strerror}", file=sys.stderr)
        elif isinstance(r, DigitsError):
            failures += 1
            print(f"{path}: {r.reason}: {r.message}", file=sys.stderr)
        else:
            print(f"{path}: {describe(r)}")
    return failures


async def run(args: argparse.Namespace) -> int:
    ca = args.tls_ca.read_bytes() if args.tls_ca else None
    failures = 0
    async with DigitsClient(
        args.server, timeout=args.timeout, token=os.environ.get(TOKEN_ENV), root_certificates=ca
    ) as c:
        if not args.one_digit:
            return 1 if await read_files(c, args.images) else 0
        # PredictStream: a folder of scans flows through one call per CHUNK files, not one per file
        # (PredictBatch calls of 64 on a server that has no PredictStream).
        for start in range(0, len(args.images), CHUNK):
            paths = args.images[start : start + CHUNK]
            outcomes: list[Prediction | DigitsError | OSError | bytes] = []
            for path in paths:
                try:
                    outcomes.append(path.read_bytes())
                except OSError as exc:
                    outcomes.append(exc)
            sent = [i for i, o in enumerate(outcomes) if isinstance(o, bytes)]
            try:
                results = await c.predict_stream(images=[outcomes[i] for i in sent]) if sent else []
            except DigitsError as exc:  # the whole call failed (server down, busy, ...): say so per file
                results = [exc] * len(sent)
            for i, result in zip(sent, results, strict=True):
                outcomes[i] = result
            for path, p in zip(paths, outcomes, strict=True):  # in the order the files were given
                if isinstance(p, OSError):
                    failures += 1
                    print(f"{path}: cannot read file: {p.strerror}", file=sys.stderr)
                elif isinstance(p, DigitsError):
                    failures += 1
                    print(f"{path}: {p.reason}: {p.message}", file=sys.stderr)
                else:
                    second, second_p = p.runner_up
                    print(f"{path}: {p.digit} (confidence {p.confidence:.1%}; runner-up {second} {second_p:.1%})")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
