"""How fast the Discord bot answers: the real bot, the fake Discord (testkit/fake_discord.py), a real server.

Discord drops an interaction that is not acknowledged within 3 s, so the figure that matters most
is the time from INTERACTION_CREATE to the deferred ACK, under load; then the time to the final
answer, and what the bot adds on top of a direct gRPC call for the same photo.

    .venv/bin/python benchmarks/discord_bench.py                     # about 1 minute
    .venv/bin/python benchmarks/discord_bench.py --requests 200 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path

from bots.core import Recognizer
from bots.discord_bot import DiscordConfig, serve
from client import DigitsClient
from model.checkpoint import DEFAULT_CHECKPOINT
from testkit.fake_discord import CALLBACK_DEFERRED_CHANNEL_MESSAGE, FakeDiscord
from testkit.photos import phone_photo
from testkit.server_process import ServerProcess
from testkit.stats import percentile as pct
from training.data import default_data_dir, load_split

TOKEN = "bench-token"


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name:<42} n={len(ms):<4} p50={pct(ms, 50):8.1f} ms  p99={pct(ms, 99):8.1f} ms  "
          f"max={max(ms):8.1f} ms  mean={statistics.fmean(ms):8.1f} ms")


async def slash(fake: FakeDiscord, data: bytes, user: dict) -> tuple[float, float]:
    """(time to the deferred ACK, time to the follow-up) for one /digit."""
    start = time.monotonic()
    token = await fake.invoke_slash("digit", fake.attachment(data), user=user)
    reply = await fake.final_reply(token, timeout=60)
    ack = next(s for s in fake.replies_to(token) if s.kind == "callback")
    assert ack.payload["type"] == CALLBACK_DEFERRED_CHANNEL_MESSAGE and reply.embeds, reply.payload
    return ack.at - start, reply.at - start


async def bench(args: argparse.Namespace, target: str) -> None:
    images = load_split("test", default_data_dir(), download=False).images
    photos = [phone_photo(images[i].numpy()) for i in range(32)]
    fake = await FakeDiscord(TOKEN).start()
    client = DigitsClient(target, timeout=30.0)
    recognizer = Recognizer(client, rate=10**9)
    task = asyncio.create_task(serve(DiscordConfig(TOKEN, api_base=fake.api_base), recognizer))
    try:
        await fake.wait_ready(60)
        for p in photos[:4]:  # warm-up: connections, caches
            await slash(fake, p, fake.new_user())

        direct = []
        for i in range(args.requests):
            start = time.monotonic()
            await client.predict_image(photos[i % len(photos)])
            direct.append(time.monotonic() - start)

        acks, finals = [], []
        for i in range(args.requests):
            ack, final = await slash(fake, photos[i % len(photos)], fake.new_user())
            acks.append(ack)
            finals.append(final)

        mentions = []
        for i in range(args.requests // 2):
            start = time.monotonic()
            msg = await fake.send_message("", [fake.attachment(photos[i % len(photos)])], mention_bot=True,
                                          author=fake.new_user())
            reply = await fake.final_reply(msg["id"], timeout=60)
            mentions.append(reply.at - start)

        burst_acks, burst_finals = [], []
        for _ in range(max(1, args.requests // args.concurrency)):
            results = await asyncio.gather(*(slash(fake, photos[j % len(photos)], fake.new_user())
                                             for j in range(args.concurrency)))
            burst_acks += [a for a, _ in results]
            burst_finals += [f for _, f in results]

        print(f"\nDiscord bot latency ({args.requests} requests, burst concurrency {args.concurrency}, "
              f"server {target}, model {args.model.name})")
        report("direct gRPC predict_image", direct)
        report("/digit: deferred ACK (sequential)", acks)
        report("/digit: follow-up answer (sequential)", finals)
        report("mention: reply (sequential)", mentions)
        report(f"/digit: deferred ACK (bursts of {args.concurrency})", burst_acks)
        report(f"/digit: follow-up answer (bursts of {args.concurrency})", burst_finals)
        over = sum(a > 3.0 for a in acks + burst_acks)
        print(f"ACKs later than Discord's 3 s window: {over} of {len(acks) + len(burst_acks)}")
        print(f"bot overhead over direct gRPC, p50: {(pct(finals, 50) - pct(direct, 50)) * 1000:.1f} ms")
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await client.close()
        await fake.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per path (default 100)")
    parser.add_argument("--concurrency", type=int, default=8, help="interactions per burst (default 8)")
    parser.add_argument("--model", type=Path, default=DEFAULT_CHECKPOINT, help="checkpoint for the server")
    parser.add_argument("--server", help="use a running server at HOST:PORT instead of starting one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.server:
        asyncio.run(bench(args, args.server))
        return 0
    with ServerProcess(model=args.model) as server:
        asyncio.run(bench(args, server.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
