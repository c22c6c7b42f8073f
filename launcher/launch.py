"""digits-run: one command that runs the digits server and every bot whose token is set.

Why: a user should get from `git clone` to a working bot with one command. The launcher starts the
server (shipped model), waits until gRPC health says SERVING, then starts each configured bot as its
own process pointed at that server, supervises them (restarting a crashed one with backoff) and on
Ctrl-C / SIGTERM stops the bots first, then the server. Every setting (flags, the shared DIGITS_*
variables, each configured bot's own) is validated before anything starts: a bad one exits 2 with one
line naming it, and a bot that still exits 2 (a configuration error, such as a token the platform
rejects) is reported and not restarted, since it would fail the same way forever.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bots.config import (
    EXIT_CONFIG,
    ConfigError,
    OneLineParser,
    core_config_from_env,
    fail,
    load_env,
    parse_float,
    parse_int,
    port,
)
from bots.discord_bot import discord_config_from_env
from bots.feedback import feedback_config_from_env
from bots.telegram_bot import telegram_config_from_env
from client.health import health_status

STOP_TIMEOUT = 20.0
CONFIG_ERROR = EXIT_CONFIG  # a child exiting with this (e.g. a rejected token) is not restarted: it would fail again
PROG = "digits-run"


@dataclass(frozen=True)
class BotSpec:
    name: str
    token_env: str
    module: str
    check: Callable[[Mapping[str, str]], object]  # validates the bot's own settings; raises ConfigError


BOTS = (
    BotSpec("telegram", "TELEGRAM_BOT_TOKEN", "bots.telegram_bot", telegram_config_from_env),
    BotSpec("discord", "DISCORD_BOT_TOKEN", "bots.discord_bot", discord_config_from_env),
)


def say(message: str) -> None:
    print(f"digits-run: {message}", flush=True)


@dataclass
class Child:
    """One supervised process and its restart state."""

    name: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    restart_at: float | None = None
    failures: list[int] = field(default_factory=list)

    def start(self) -> None:
        # Own process group: a terminal Ctrl-C reaches only the launcher, which stops children in order.
        self.process = subprocess.Popen(self.command, env=self.env, process_group=0)
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        return self.process.poll() if self.process else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Signal, wait, and kill only if it hangs; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {timeout:g} s; killing it")
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_serving(server: Child, target: str, timeout: float, stopping) -> bool:
    """Block until the server is SERVING; False if it exited, timed out, or we were asked to stop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        if server.poll() is not None:
            say(f"server exited during start-up with code {server.poll()}")
            return False
        if health_status(target) == "SERVING":
            return True
        time.sleep(0.2)
    if not stopping():
        say(f"server not healthy after {timeout:g} s")
    return False


def _positive_seconds(value: str) -> float:
    try:
        return parse_float(value, "--startup-timeout", low=0.0)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds greater than 0, got {value!r}") from None


def _metrics_port(value: str) -> int:
    try:
        return parse_int(value, "--metrics-port", low=0, high=65535)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 (off) to 65535, got {value!r}") from None


def _model(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"must be an existing checkpoint file, got {value!r}")
    return path


def _host(value: str) -> str:
    if not value.strip() or any(c.isspace() for c in value):
        raise argparse.ArgumentTypeError(f"must be an address such as 127.0.0.1 or 0.0.0.0, got {value!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog=PROG,
        description="Run the digits server with the shipped model and every bot whose token is set "
        "(TELEGRAM_BOT_TOKEN, DISCORD_BOT_TOKEN; a .env file is read). Ctrl-C stops them all.",
        epilog="Every setting of the server and of each bot to be started is checked first: a bad one exits "
        "with code 2 and one line naming it. A bot that exits with code 2 later is not restarted.",
    )
    parser.add_argument("--host", type=_host, default="127.0.0.1", help="server listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=50051, help="server gRPC port (default 50051)")
    parser.add_argument("--model", type=_model, default=None, help="checkpoint (default: the shipped one)")
    parser.add_argument("--metrics-port", type=_metrics_port, default=None, help="server Prometheus port (0: off)")
    parser.add_argument("--startup-timeout", type=_positive_seconds, default=180.0,
                        help="seconds to wait for the server (default 180)")
    parser.add_argument(
        "--feedback-db",
        type=Path,
        default=Path("digits-feedback.sqlite3"),
        help="SQLite file for users' corrections (relative: under the working directory)",
    )
    parser.add_argument("--no-feedback-db", action="store_true", help="keep no corrections (Feedback is refused)")
    parser.add_argument("--no-restart", action="store_true", help="do not restart a bot that exits")
    return parser.parse_args(argv)


def check_settings(env: Mapping[str, str]) -> list[BotSpec]:
    """Validate the shared bot settings and those of each bot whose token is set; returns those bots.

    Why here too: a bad setting should stop `digits-run` at once with its one-line reason, not
    after the server has spent seconds loading the model."""
    wanted = [spec for spec in BOTS if (env.get(spec.token_env) or "").strip()]
    if wanted:
        core_config_from_env(env)
        feedback_config_from_env(env)
    for spec in wanted:
        spec.check(env)
    return wanted


def server_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "server", "--host", args.host, "--port", str(args.port)]
    if args.model is not None:  # else the server's own default (model.checkpoint.DEFAULT_CHECKPOINT)
        cmd += ["--model", str(args.model)]
    if args.metrics_port is not None:
        cmd += ["--metrics-port", str(args.metrics_port)]
    if not args.no_feedback_db:
        cmd += ["--feedback-db", str(args.feedback_db.resolve())]
    return cmd


def bot_command(spec: BotSpec) -> list[str]:
    # Import and call main() rather than `-m`, so it works whether or not the module has a __main__ guard.
    return [sys.executable, "-c", f"import sys; from {spec.module} import main; sys.exit(main())"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of digits-run; returns 0 after a clean stop."""
    args = parse_args(argv)
    load_env()
    try:
        wanted = check_settings(os.environ)
    except ConfigError as exc:
        return fail(PROG, exc)
    stop_signal: list[int] = []

    def on_signal(signum, frame) -> None:
        stop_signal.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stopping = lambda: bool(stop_signal)  # noqa: E731

    connect_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    target = f"{connect_host}:{args.port}"
    server = Child("digits server", server_command(args), dict(os.environ))
    server.start()
    # `kill -HUP <digits-run>` reloads the model, as it does for digits-server itself (the server runs
    # in a process group of its own, so the launcher passes the signal on).
    signal.signal(signal.SIGHUP, lambda signum, frame: server.process and server.process.send_signal(signum))
    say(f"starting the digits server on {target} (pid {server.pid}); waiting for it to be healthy...")
    if not wait_serving(server, target, args.startup_timeout, stopping):
        server.stop()
        return 0 if stopping() else 1
    say(f"server is SERVING on {target}")
    if args.no_feedback_db:
        say("keeping no corrections (--no-feedback-db)")
    else:
        say(f"users' corrections are kept in {args.feedback_db.resolve()} (digits-feedback stats --db ...)")

    bot_env = {**os.environ, "DIGITS_SERVER": target}
    bots: list[Child] = []
    for spec in BOTS:
        if spec in wanted:
            bot = Child(f"{spec.name} bot", bot_command(spec), bot_env)
            bot.start()
            bots.append(bot)
            say(f"started the {bot.name} (pid {bot.pid})")
        else:
            say(f"{spec.name} bot not started: set {spec.token_env} (environment or .env) to run it")
    if not bots:
        say("running the server alone. To add bots, set TELEGRAM_BOT_TOKEN and/or DISCORD_BOT_TOKEN in .env, restart.")
    say("press Ctrl-C to stop")

    try:
        supervise(server, bots, stopping, restart=not args.no_restart)
        say(f"got {signal.Signals(stop_signal[0]).name}; stopping the bots, then the server...")
    finally:
        for bot in bots:
            code = bot.stop(signal.SIGTERM)
            if code is not None:
                say(f"{bot.name} stopped (exit code {code})")
        code = server.stop(signal.SIGTERM)
        say(f"server stopped (exit code {code})")
    return 0


def supervise(server: Child, bots: list[Child], stopping, *, restart: bool) -> None:
    """Watch children until a stop signal; report and restart (with backoff) any that exits."""
    while not stopping():
        now = time.monotonic()
        for child in (server, *bots):
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start()
                    say(f"restarted the {child.name} (pid {child.pid})")
                continue
            code = child.poll()
            if code is None:
                if now - child.started_at > 60:
                    child.backoff = 1.0  # it ran for a while: the next crash restarts quickly again
                continue
            if child is not server and code == CONFIG_ERROR:
                say(f"the {child.name} exited with code {code}; not restarting it: that is a configuration error "
                    "(see its one-line reason above), so it would fail the same way again. Fix it and run again.")
                child.restart_at = float("inf")
                continue
            if child is not server and not restart:
                say(f"the {child.name} exited with code {code}; not restarting it (--no-restart)")
                child.restart_at = float("inf")
                continue
            say(f"the {child.name} exited unexpectedly with code {code}; restarting in {child.backoff:g} s")
            child.restart_at = now + child.backoff
            child.backoff = min(child.backoff * 2, 60.0)
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
