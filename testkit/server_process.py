"""A real digits server in a subprocess on a free loopback port: used by the test fixture
`digits_server` (tests/conftest.py), the bots' tests and the benchmark. No mocks: it is the
same `python -m server` a deployment runs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from client.health import health_status

__all__ = ["ServerProcess", "free_port", "health_status"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`.target`, `.start()`, `.stop()` (SIGTERM, returns the exit code); restart keeps the port."""

    def __init__(
        self,
        model: Path | str | None = None,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        port: int | None = None,
        metrics_port: int | None = None,
        own_group: bool = False,
    ) -> None:
        self.model = model
        self.args = list(args)
        self.env = env
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        while self.metrics_port == self.port:  # two free_port() calls can return the same port
            self.metrics_port = free_port()
        self.own_group = own_group  # a process group of its own, as a server started from a terminal
        self.target = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="digits-server-", suffix=".log", delete=False)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "server", "--port", str(self.port), "--metrics-port", str(self.metrics_port)]
        if self.model is not None:
            cmd += ["--model", str(self.model)]
        return cmd + self.args

    def start(self, timeout: float = 120.0, wait: bool = True, credentials=None) -> ServerProcess:
        """Launch the server; with `wait`, block until health says SERVING (model loaded and warm)."""
        if self.running:
            return self
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(
            self.command(),
            cwd=REPO_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_group,
        )
        if wait:
            self.wait_serving(timeout, credentials)
        return self

    def wait_serving(self, timeout: float = 120.0, credentials=None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"digits server exited during start-up:\n{self.log()[-3000:]}")
            if health_status(self.target, credentials=credentials) == "SERVING":
                return
            time.sleep(0.1)
        raise TimeoutError(f"digits server not SERVING after {timeout:g} s:\n{self.log()[-3000:]}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int = signal.SIGTERM) -> None:
        if self.running:
            self.process.send_signal(sig)

    def signal_group(self, sig: int | None = None) -> None:
        """What Ctrl-C in a terminal does: `sig` to the server and every process it started.
        Needs `own_group=True`, or the signal would reach the caller's group too."""
        if not self.own_group:
            raise RuntimeError("signal_group needs ServerProcess(own_group=True)")
        if self.running:
            os.killpg(self.process.pid, signal.SIGINT if sig is None else sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain) and wait; kills only if it hangs. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def close(self) -> None:
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()
