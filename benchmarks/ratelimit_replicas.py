"""Per-user rate limit across bot replicas sharing one real Redis: answered count vs the configured limit.

Two modes, each run twice side by side: with DIGITS_REDIS_URL (shared) and without (in-memory per
replica, the control):
- `bots` (default): two real `digits-telegram` processes in webhook mode behind the fake Bot API, a
  real digits server; one user's N photos are delivered round-robin to the replicas; counts the
  replies that name a digit.
- `limiters`: two processes, each with its own limiter and connection, check N requests of one user
  at once (fast; no model, no Telegram).
The shared run must answer exactly the limit; the exit code is 1 when it does not.

    .venv/bin/python benchmarks/ratelimit_replicas.py [--mode bots|limiters] [--requests 20] [--limit 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time

from testkit.redis_server import RedisServer

USER = "telegram:4242"


# -- mode "limiters": two processes, two limiters, one Redis --------------------------------------
def _replica(redis_url: str | None, limit: int, requests: int, prefix: str, start, results) -> None:
    """One replica process: wait for the other, then check `requests` requests of one user concurrently."""
    from bots.ratelimit import InMemoryRateLimiter
    from bots.redis_store import RedisRateLimiter, connect

    async def run() -> int:
        limiter = (RedisRateLimiter(connect(redis_url), limit, 60.0, prefix=prefix) if redis_url
                   else InMemoryRateLimiter(limit, 60.0))
        try:
            await limiter.check("warm-up")  # connect (and load the script) before the race
            start.wait()
            waits = await asyncio.gather(*(limiter.check(USER) for _ in range(requests)))
            return sum(w == 0.0 for w in waits)
        finally:
            await limiter.close()

    results.put(asyncio.run(run()))


def run_limiters(redis_url: str | None, limit: int, requests: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(2), ctx.Queue()
    prefix = f"bench:{time.time_ns()}:"
    shares = [requests // 2, requests - requests // 2]
    procs = [ctx.Process(target=_replica, args=(redis_url, limit, n, prefix, start, results)) for n in shares]
    for p in procs:
        p.start()
    answered = sum(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    return answered


# -- mode "bots": two real digits-telegram webhook replicas -----------------------------------------
def run_bots(redis_url: str | None, limit: int, requests: int, target: str, photo: bytes) -> tuple[int, int]:
    """Returns (replies naming a digit, flood notices) for one user's `requests` photos, round-robin."""
    from testkit.fake_telegram import FakeTelegram
    from testkit.telegram_replicas import TelegramReplicas

    env = {"DIGITS_SERVER": target, "DIGITS_RATE_LIMIT": str(limit), "DIGITS_RATE_WINDOW": "600",
           "LOG_LEVEL": "WARNING"}
    if redis_url:
        env["DIGITS_REDIS_URL"] = redis_url
    with FakeTelegram() as fake, tempfile.TemporaryDirectory() as cwd, TelegramReplicas(fake, 2, env, cwd) as bots:
        for i in range(requests):
            fake.photo(photo, chat_id=4242, user_id=4242)
            assert bots.post(fake.held[-1], i % 2) == 200
        last, settled_at = -1, time.monotonic()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # done when the bot has sent nothing new for 2 s
            sent = len(fake.sent("sendMessage", chat_id=4242))
            if sent != last:
                last, settled_at = sent, time.monotonic()
            elif time.monotonic() - settled_at > 2.0:
                break
            time.sleep(0.1)
        replies = [str(c.params.get("text")) for c in fake.sent("sendMessage", chat_id=4242)]
    return sum("sure)" in r for r in replies), sum("faster than I can read" in r for r in replies)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("bots", "limiters"), default="bots")
    parser.add_argument("--requests", type=int, default=20, help="requests from one user (default 20)")
    parser.add_argument("--limit", type=int, default=5, help="DIGITS_RATE_LIMIT (default 5; window 600 s)")
    parser.add_argument("--redis-url", help="use a running Redis instead of starting one")
    args = parser.parse_args(argv)

    redis = None if args.redis_url else RedisServer().start()
    redis_url = args.redis_url or redis.url
    print(f"redis: {redis.version() if redis else redis_url}; two replicas, one user, "
          f"{args.requests} requests, limit {args.limit}")
    server = None
    try:
        if args.mode == "limiters":
            runs = [(label, run_limiters(url, args.limit, args.requests), None)
                    for label, url in (("shared (Redis)", redis_url), ("in-memory per replica", None))]
        else:
            from model.checkpoint import DEFAULT_CHECKPOINT
            from testkit.photos import phone_photo
            from testkit.server_process import ServerProcess
            from training.data import default_data_dir, load_split

            server = ServerProcess(model=DEFAULT_CHECKPOINT)
            server.start()
            photo = phone_photo(load_split("test", default_data_dir(), download=False).images[0].numpy())
            runs = [(label, *run_bots(url, args.limit, args.requests, server.target, photo))
                    for label, url in (("shared (Redis)", redis_url), ("in-memory per replica", None))]
    finally:
        if server is not None:
            server.close()
        if redis is not None:
            redis.close()
    for label, answered, notices in runs:
        extra = f", flood notices {notices}" if notices is not None else ""
        print(f"{label}: answered {answered} of {args.requests} (limit {args.limit}){extra}")
    shared = runs[0][1]
    print(f"shared limit held exactly: {'yes' if shared == args.limit else 'NO'}")
    return 0 if shared == args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
