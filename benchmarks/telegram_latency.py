"""Telegram reply latency: from getUpdates handing the bot a 640x480 photo to the bot's sendMessage.

Real parts only: the `digits-telegram` process (python-telegram-bot, long polling), a real digits
server with the shipped model, and the fake Bot API from tests/ on 127.0.0.1. Both timestamps are
taken inside the fake API, so the figure covers getFile, the download, the gRPC call and the reply.
Updates are sent one at a time (latency, not throughput), at most `--rate` per second: the bot's
outgoing flood control holds replies to Telegram's 30 messages/s, so a faster loop would measure that
queue rather than the bot. Target: p50 <= 150 ms.

    .venv/bin/python benchmarks/telegram_latency.py [--updates 100] [--warmup 10] [--rate 20] [--target HOST:PORT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from model.checkpoint import DEFAULT_CHECKPOINT
from testkit.fake_telegram import FakeTelegram
from testkit.photos import phone_photo
from testkit.server_process import REPO_ROOT as REPO
from testkit.server_process import ServerProcess
from testkit.stats import percentile


def sample_photos(count: int, noise: float) -> list[bytes]:
    """MNIST test digits as 640x480 JPEGs; `noise` adds sensor-like grain so files are phone-sized."""
    import io

    import numpy as np
    from PIL import Image

    from training.data import default_data_dir, load_split

    test = load_split("test", default_data_dir(), download=False)
    rng = np.random.default_rng(0)
    photos = []
    for i in range(count):
        clean = np.asarray(Image.open(io.BytesIO(phone_photo(test.images[i].numpy()))).convert("RGB"), dtype=float)
        grainy = np.clip(clean + rng.normal(0, noise, clean.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(grainy).save(buf, format="JPEG", quality=90)
        photos.append(buf.getvalue())
    return photos


def wait_ready(fake: FakeTelegram, bot: subprocess.Popen, timeout: float = 60.0) -> None:
    """The bot is ready once it has polled (deleteWebhook precedes the first getUpdates)."""
    deadline = time.monotonic() + timeout
    while not fake.sent("deleteWebhook"):
        if bot.poll() is not None:
            raise RuntimeError(f"digits-telegram exited with code {bot.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("digits-telegram did not start polling")
        time.sleep(0.05)
    time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100, help="measured updates (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured updates first (default 10)")
    parser.add_argument("--target", help="use a running digits server instead of starting one")
    parser.add_argument("--noise", type=float, default=8.0, help="grain std-dev in grey levels (0: clean)")
    parser.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--rate", type=float, default=20.0,
                        help="at most this many updates per second (default 20, under Telegram's 30 messages/s)")
    args = parser.parse_args(argv)

    server = None
    if args.target is None:
        server = ServerProcess(model=args.model)
        server.start()
    target = args.target or server.target
    photos = sample_photos(20, args.noise)
    size = statistics.fmean(len(p) for p in photos) / 1024
    print(f"photos: 640x480 JPEG, mean {size:.1f} KiB (grain {args.noise:g}); digits server {target}")
    with FakeTelegram() as fake:
        env = {**os.environ, "TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_URL": fake.root,
               "DIGITS_SERVER": target, "DIGITS_RATE_LIMIT": "1000000", "LOG_LEVEL": "WARNING"}
        bot = subprocess.Popen([Path(sys.executable).parent / "digits-telegram"], env=env, cwd=REPO)
        try:
            wait_ready(fake, bot)
            latencies: list[float] = []
            digits_named = 0
            next_at = time.monotonic()
            for i in range(args.warmup + args.updates):
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at = time.monotonic() + 1.0 / args.rate
                update_id, message_id = fake.photo(photos[i % len(photos)], chat_id=42, user_id=42)
                reply = fake.wait_for_sync("sendMessage", reply_to=message_id)
                if i >= args.warmup:
                    latencies.append((reply.at - fake.delivered_at[update_id]) * 1000)
                    digits_named += "sure)" in str(reply.params.get("text"))
        finally:
            bot.terminate()
            bot.wait(30)
            if server is not None:
                server.close()
    p50, p90, p99 = (percentile(latencies, q) for q in (50, 90, 99))
    print(f"updates={len(latencies)} p50={p50:.1f} ms p90={p90:.1f} ms p99={p99:.1f} ms "
          f"mean={statistics.fmean(latencies):.1f} ms max={max(latencies):.1f} ms")
    print(f"replies naming a digit: {digits_named}/{len(latencies)} (the rest: no digit / errors)")
    print(f"target p50 <= 150 ms: {'met' if p50 <= 150 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
