"""Bot settings from the environment, validated once at start-up.

Why: a malformed setting used to surface only at the first request (`DIGITS_RATE_LIMIT=0` made every
request fail) or as a crash that `digits-run` restarted forever (`DIGITS_RATE_LIMIT=abc`). Every
setting is parsed here, up front; a bad one raises `ConfigError` with one line that names the
variable and what is allowed, and each command turns that into exit code 2 (`EXIT_CONFIG`).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from dotenv import load_dotenv

EXIT_CONFIG = 2  # a configuration error: restarting would fail the same way
DEFAULT_SERVER = "127.0.0.1:50051"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_RATE = 10
DEFAULT_WINDOW = 60.0
DEFAULT_LOW_CONFIDENCE = 0.80
DEFAULT_TIMEOUT = 5.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message is one line naming the setting and what is allowed."""


@dataclass(frozen=True)
class CoreConfig:
    """Settings both bots share; each platform's own settings (tokens, URLs) are read by its adapter."""

    digits_server: str = DEFAULT_SERVER
    api_token: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    rate: int = DEFAULT_RATE
    per_seconds: float = DEFAULT_WINDOW
    low_confidence: float = DEFAULT_LOW_CONFIDENCE
    timeout: float = DEFAULT_TIMEOUT
    redis_url: str | None = None  # None: the per-user rate limit is kept in this process

    def __repr__(self) -> str:  # the API token and a Redis password must never reach a log line via repr()
        return (f"CoreConfig(digits_server={self.digits_server!r}, max_bytes={self.max_bytes}, rate={self.rate}, "
                f"per_seconds={self.per_seconds:g}, low_confidence={self.low_confidence:g}, "
                f"timeout={self.timeout:g}, redis={'on' if self.redis_url else 'off'}, api_token=***)")


def load_env(path: str | os.PathLike | None = None) -> None:
    """Read `.env` from the working directory if present; real environment variables win."""
    env_file = Path(path) if path else Path.cwd() / ".env"
    if env_file.is_file():
        load_dotenv(env_file, override=False)


# -- one parser per kind of value: each names the setting and what it allows ---------------------------
def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def env_int(env: Mapping[str, str], name: str, default: int, *, low: int = 1, high: int | None = None) -> int:
    """A whole number in [low, high]; unset or empty means `default`."""
    raw = _raw(env, name)
    if raw is None:
        return default
    return parse_int(raw, name, low=low, high=high)


def parse_int(raw: str, name: str, *, low: int = 1, high: int | None = None) -> int:
    allowed = f"a whole number from {low}" + (f" to {high}" if high is not None else " up")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {allowed}, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        raise ConfigError(f"{name} must be {allowed}, got {raw!r}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, *, low: float = 0.0, high: float | None = None,
              low_inclusive: bool = False) -> float:
    """A finite number above `low` (or equal to it with low_inclusive) and at most `high`."""
    raw = _raw(env, name)
    if raw is None:
        return default
    return parse_float(raw, name, low=low, high=high, low_inclusive=low_inclusive)


def parse_float(raw: str, name: str, *, low: float = 0.0, high: float | None = None,
                low_inclusive: bool = False) -> float:
    bound = f"{'at least' if low_inclusive else 'greater than'} {low:g}"
    allowed = f"a number {bound}" + (f" and at most {high:g}" if high is not None else "")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {allowed}, got {raw!r}") from None
    too_low = value < low if low_inclusive else value <= low
    if not math.isfinite(value) or too_low or (high is not None and value > high):
        raise ConfigError(f"{name} must be {allowed}, got {raw!r}")
    return value


def env_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _raw(env, name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of 1/0, true/false, yes/no, on/off, got {raw!r}")


def env_url(env: Mapping[str, str], name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
    raw = _raw(env, name)
    if raw is None:
        return default
    return parse_url(raw, name, schemes)


def parse_url(raw: str, name: str, schemes: tuple[str, ...]) -> str:
    """A URL with one of `schemes` and a host (the value itself is not echoed: it may embed a password)."""
    try:
        parts = urlsplit(raw)
        where = parts.path if parts.scheme == "unix" else parts.hostname  # unix:///run/redis.sock has no host
        ok = parts.scheme in schemes and bool(where) and " " not in raw
        if parts.port is not None:
            ok = ok and 0 < parts.port < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be a {'/'.join(s + '://' for s in schemes)} URL with a host "
                          f"(e.g. {schemes[0]}://host:port)")
    return raw


def env_target(env: Mapping[str, str], name: str, default: str) -> str:
    """A gRPC target (host:port, dns:///name:port, ipv4:a:p,b:p, unix:...): non-empty, no whitespace."""
    raw = _raw(env, name)
    if raw is None:
        return default
    if any(c.isspace() for c in raw):
        raise ConfigError(f"{name} must be a gRPC target such as 127.0.0.1:50051 or dns:///host:port "
                          f"(no spaces), got {raw!r}")
    return raw


def core_config_from_env(env: Mapping[str, str] | None = None) -> CoreConfig:
    """The shared settings, validated. With `env=None` the process environment is used (after reading `.env`)."""
    if env is None:
        load_env()
        env = os.environ
    return CoreConfig(
        digits_server=env_target(env, "DIGITS_SERVER", DEFAULT_SERVER),
        api_token=_raw(env, "DIGITS_API_TOKEN"),
        max_bytes=env_int(env, "DIGITS_MAX_BYTES", DEFAULT_MAX_BYTES, low=1),
        rate=env_int(env, "DIGITS_RATE_LIMIT", DEFAULT_RATE, low=1),
        per_seconds=env_float(env, "DIGITS_RATE_WINDOW", DEFAULT_WINDOW, low=0.0),
        low_confidence=env_float(env, "DIGITS_LOW_CONFIDENCE", DEFAULT_LOW_CONFIDENCE, low=0.0, high=1.0,
                                 low_inclusive=True),
        timeout=env_float(env, "DIGITS_TIMEOUT", DEFAULT_TIMEOUT, low=0.0),
        redis_url=env_url(env, "DIGITS_REDIS_URL", None, ("redis", "rediss", "unix")),
    )


config_from_env = core_config_from_env  # the name the bots and tests have always used


# -- command lines ------------------------------------------------------------------------------------
class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (exit 2), like a bad environment variable."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see --help)\n")


def log_level(value: str) -> str:
    """argparse type for --log-level (its default comes from LOG_LEVEL, which is validated the same way)."""
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return level


def env_log_level(env: Mapping[str, str] | None = None) -> str:
    """LOG_LEVEL as the default of --log-level; a bad value is a ConfigError naming LOG_LEVEL."""
    env = os.environ if env is None else env
    raw = _raw(env, "LOG_LEVEL") or "INFO"
    try:
        return log_level(raw)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"LOG_LEVEL {exc}") from None


def port(value: str) -> int:
    """argparse type for a TCP port (1-65535)."""
    try:
        return parse_int(value, "port", low=1, high=65535)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {value!r}") from None


def fail(prog: str, error: ConfigError | str) -> int:
    """Print one line for a configuration error and return EXIT_CONFIG (callers `return fail(...)`)."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return EXIT_CONFIG


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

