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


def report(path: Path, outcome: object, describe_ok) -> bool:
    """Print one file's line (results to stdout, failures to stderr); True when it failed."""
    if isinstance(outcome, OSError):
        print(f"{path}: cannot read file: {outcome.strerror}", file=sys.stderr)
        return True
    if isinstance(outcome, DigitsError):
        print(f"{path}: {outcome.reason}: {outcome.message}", file=sys.stderr)
        return True
    print(f"{path}: {describe_ok(outcome)}")
    return False


def describe_digit(p: Prediction) -> str:
    second, second_p = p.runner_up
    return f"{p.digit} (confidence {p.confidence:.1%}; runner-up {second} {second_p:.1%})"


def lacks_read(outcomes: list) -> bool:
    """An older server (no Read RPC) answers UNIMPLEMENTED: then every file is read as one digit."""
    return any(isinstance(o, DigitsError) and o.reason == "UNIMPLEMENTED" for o in outcomes)


async def read_files(c: DigitsClient, paths: list[Path]) -> list[Reading | DigitsError | OSError]:
    """Read, a few files in flight at once; outcomes in the order the files were given."""
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

    return list(await asyncio.gather(*(one(p) for p in paths)))


async def predict_files(c: DigitsClient, paths: list[Path]) -> list[Prediction | DigitsError | OSError]:
    """Each file as one digit through PredictStream: a folder of scans flows through one call per CHUNK
    files, not one per file (PredictBatch calls of 64 on a server that has no PredictStream)."""
    outcomes: list[Prediction | DigitsError | OSError | bytes] = []
    for start in range(0, len(paths), CHUNK):
        chunk: list[Prediction | DigitsError | OSError | bytes] = []
        for path in paths[start : start + CHUNK]:
            try:
                chunk.append(path.read_bytes())
            except OSError as exc:
                chunk.append(exc)
        sent = [i for i, o in enumerate(chunk) if isinstance(o, bytes)]
        try:
            results = await c.predict_stream(images=[chunk[i] for i in sent]) if sent else []
        except DigitsError as exc:  # the whole call failed (server down, busy, ...): say so per file
            results = [exc] * len(sent)
        for i, result in zip(sent, results, strict=True):
            chunk[i] = result
        outcomes += chunk
    return outcomes


async def run(args: argparse.Namespace) -> int:
    ca = args.tls_ca.read_bytes() if args.tls_ca else None
    async with DigitsClient(
        args.server, timeout=args.timeout, token=os.environ.get(TOKEN_ENV), root_certificates=ca
    ) as c:
        outcomes: list = []
        if not args.one_digit:
            outcomes = await read_files(c, args.images)
            if lacks_read(outcomes):
                print("the server has no Read (an older version): reading each file as one digit", file=sys.stderr)
                outcomes = []
        if outcomes:
            failures = [report(path, o, describe) for path, o in zip(args.images, outcomes, strict=True)]
        else:
            outcomes = await predict_files(c, args.images)
            failures = [report(path, o, describe_digit) for path, o in zip(args.images, outcomes, strict=True)]
    return 1 if any(failures) else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
