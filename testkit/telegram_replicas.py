"""Several `digits-telegram` processes in webhook mode behind one fake Bot API: replicas as a
deployment runs them (each its own process, port and memory), for tests and the replica benchmark.

Telegram POSTs each update to one URL; a load balancer hands it to any replica. Here the caller
picks the replica for each update, so a test can send a user's messages round-robin on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from testkit.fake_telegram import FakeTelegram
from testkit.server_process import free_port

SECRET = "replica-secret"


class TelegramReplicas:
    """`count` digits-telegram webhook processes; `post(update, i)` delivers an update to replica i."""

    def __init__(self, fake: FakeTelegram, count: int, env: dict[str, str], cwd: Path | str) -> None:
        self.fake = fake
        self.ports = [free_port() for _ in range(count)]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "DISCORD_", "DIGITS_"))}
        self.env = {**base, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_URL": fake.root,
                    "TELEGRAM_WEBHOOK_SECRET": SECRET, **env}
        self.cwd = cwd
        self.processes: list[subprocess.Popen] = []

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}/telegram"

    def start(self, timeout: float = 60.0) -> TelegramReplicas:
        self.fake.hold_updates = True
        for port in self.ports:
            # Every replica registers the same public URL, as they would behind one load balancer.
            cmd = [sys.executable, "-m", "bots.telegram_bot", "--webhook-url", "http://127.0.0.1/telegram",
                   "--listen", "127.0.0.1", "--port", str(port)]
            self.processes.append(subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
                                                   stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + timeout
        for i in range(len(self.ports)):
            while self._post(b"{\"update_id\": 1}", i) is None:  # an empty update: 200 once the listener is up
                if self.processes[i].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"replica {i} did not come up: {self.stop()[i][-3000:]}")
                time.sleep(0.1)
        return self

    def _post(self, body: bytes, i: int) -> int | None:
        request = urllib.request.Request(self.url(i), data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, ConnectionError):
            return None

    def post(self, update: dict, i: int) -> int | None:
        """Deliver one update (as the fake holds it) to replica i; returns the HTTP status."""
        return self._post(json.dumps(update).encode(), i)

    def stop(self) -> list[str]:
        """SIGINT every replica; returns each one's output."""
        outputs = []
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(2)
        for process in self.processes:
            try:
                outputs.append(process.communicate(timeout=30)[0] or "")
            except subprocess.TimeoutExpired:
                process.kill()
                outputs.append(process.communicate()[0] or "")
        self.processes = []
        return outputs

    def __enter__(self) -> TelegramReplicas:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
