"""`digits-predict IMAGE... [--server HOST:PORT]`: read image files through the server (Read) and
print, per file, the digits in reading order (a single digit or a whole number) and the confidence.
Exit code 1 if any file failed."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from client import DigitsClient, DigitsError, Reading

TOKEN_ENV = "DIGITS_API_TOKEN"
CONCURRENT = 8  # files in flight at once


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="digits-predict",
        description="Send image files to a digits server; print what each reads (a digit or a number) and how sure.",
        epilog=f"The token, if the server requires one, is read from {TOKEN_ENV} (never a flag: it would show in ps).",
    )
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="PNG/JPEG/... files: a digit or a number each")
    p.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the server (default %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per file, retries included")
    p.add_argument("--tls-ca", type=Path, default=None, help="PEM root certificate(s): connect with TLS")
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


async def run(args: argparse.Namespace) -> int:
    ca = args.tls_ca.read_bytes() if args.tls_ca else None
    failures = 0
    limit = asyncio.Semaphore(CONCURRENT)
    async with DigitsClient(
        args.server, timeout=args.timeout, token=os.environ.get(TOKEN_ENV), root_certificates=ca
    ) as c:

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

        # Read, a few files in flight at once; printed in the order the files were given
        for path, r in zip(args.images, await asyncio.gather(*(one(p) for p in args.images)), strict=True):
            if isinstance(r, OSError):
                failures += 1
                print(f"{path}: cannot read file: {r.strerror}", file=sys.stderr)
            elif isinstance(r, DigitsError):
                failures += 1
                print(f"{path}: {r.reason}: {r.message}", file=sys.stderr)
            else:
                print(f"{path}: {describe(r)}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
