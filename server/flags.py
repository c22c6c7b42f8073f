"""Every `digits-server` flag and setting checked before anything starts: a bad one is one line on
stderr that names it, and exit code 2 (a supervisor does not restart a configuration error)."""

from __future__ import annotations

import argparse
import math
import os
from typing import NoReturn

GRPC_MAX_MESSAGE_MB = (2**31 - 1) // 2**20  # gRPC takes message limits as a signed 32-bit byte count
GRPC_MAX_MS = 2**31 - 1  # and durations as a signed 32-bit millisecond count


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block): `digits-server: error: ... (see --help)`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _check(parser: argparse.ArgumentParser, ok: bool, message: str) -> None:
    if not ok:
        parser.error(message)


def _number(parser, args, flag: str, low: float, high: float = math.inf, *, low_open: bool = False) -> None:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    if value is None:
        return
    fits = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    bound = f"> {low:g}" if low_open else f">= {low:g}"
    if high != math.inf:
        bound += f" and <= {high:g}"
    _check(parser, fits, f"{flag} must be {bound}, got {value:g}")


def _readable_file(parser, flag: str, path) -> None:
    if path is not None:
        _check(parser, os.path.isfile(path) and os.access(path, os.R_OK), f"{flag} {path}: no such readable file")


def validate(parser: argparse.ArgumentParser, args: argparse.Namespace, env: dict[str, str] | None = None) -> None:
    """Exit 2 with one line at the first bad flag or setting."""
    env = os.environ if env is None else env
    _check(parser, bool(args.host.strip()), "--host must not be empty")
    _number(parser, args, "--port", 0, 65535)
    _number(parser, args, "--metrics-port", 0, 65535)
    _check(parser, args.metrics_port == 0 or args.port != args.metrics_port, "--metrics-port must differ from --port")
    _number(parser, args, "--max-batch-size", 1, 4096)
    _number(parser, args, "--max-batch-delay-ms", 0, 1000)
    _number(parser, args, "--max-queue", 1, 1_000_000)
    _number(parser, args, "--workers", 1, 256)
    _number(parser, args, "--torch-threads", 1, 1024)
    _number(parser, args, "--max-message-mb", 0, GRPC_MAX_MESSAGE_MB, low_open=True)
    _number(parser, args, "--max-pixels", 1)
    _number(parser, args, "--max-decode-mb", 0, low_open=True)
    _number(parser, args, "--grace", 0, 3600)
    _number(parser, args, "--drain-delay", 0, 60)
    _number(parser, args, "--model-timeout", 0, 3600, low_open=True)
    _number(parser, args, "--max-connection-idle-s", 0, GRPC_MAX_MS / 1000, low_open=True)
    _number(parser, args, "--keepalive-s", 0, GRPC_MAX_MS / 1000, low_open=True)
    _number(parser, args, "--reload-poll", 0, 3600)
    _number(parser, args, "--max-connection-age", 0, GRPC_MAX_MS / 1000)
    _number(parser, args, "--stream-window", 1, 1_000_000)
    _check(parser, all("=" in pair for pair in args.grpc_arg), "--grpc-arg takes NAME=VALUE")
    if args.event_loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            parser.error("--event-loop uvloop needs the uvloop package (pip install uvloop)")
    _readable_file(parser, "--model", args.model)
    _check(parser, (args.tls_cert is None) == (args.tls_key is None), "--tls-cert and --tls-key go together")
    _readable_file(parser, "--tls-cert", args.tls_cert)
    _readable_file(parser, "--tls-key", args.tls_key)
    token = env.get("DIGITS_API_TOKEN")
    if token:  # the value is never printed
        printable = token.isascii() and token.isprintable() and " " not in token
        _check(parser, printable, "DIGITS_API_TOKEN must be printable ASCII without spaces")
