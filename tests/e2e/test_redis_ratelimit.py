"""The bots' shared state in a real Redis server (started here, on a free loopback port): the sliding
window, atomic across replicas; the chat state; and what happens when Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest
import pytest_asyncio

from bots.config import CoreConfig
from bots.core import make_chat_state, make_limiter
from bots.feedback import PendingUnavailable
from bots.ratelimit import InMemoryRateLimiter
from bots.redis_store import RedisChatState, RedisPending, RedisRateLimiter, connect
from testkit.redis_server import RedisServer
from testkit.server_process import REPO_ROOT

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def replicas(redis_server, request):
    """Two limiters with clients of their own, as two bot processes would have; a fresh key space per test."""
    prefix = f"test:{request.node.name}:"
    made = [RedisRateLimiter(connect(redis_server.url), 3, 1.0, prefix=prefix) for _ in range(2)]
    yield made
    for limiter in made:
        await limiter.close()


async def test_the_server_is_real(redis_server):
    client = connect(redis_server.url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    assert info["tcp_port"] == redis_server.port and (info.get("redis_version") or info.get("valkey_version"))


async def test_sliding_window_and_refusals_do_not_count(replicas):
    limiter = replicas[0]
    assert [await limiter.check("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = await limiter.check("a")
    assert 0.5 < wait <= 1.0
    assert await limiter.check("b") == 0.0  # per user
    await asyncio.sleep(0.4)
    later = await limiter.check("a")
    assert 0.0 < later < wait - 0.3  # the refusal did not extend the window
    await asyncio.sleep(later + 0.05)
    assert await limiter.check("a") == 0.0
    assert limiter.health.down_since is None


async def test_two_replicas_share_one_window_atomically(replicas):
    """60 requests from one user at once, spread over two replicas: exactly `rate` get through."""
    first, second = replicas
    waits = await asyncio.gather(*(r.check("burst") for _ in range(30) for r in (first, second)))
    assert sum(w == 0.0 for w in waits) == first.rate
    assert all(0.0 < w <= 1.0 for w in waits if w)


async def test_in_memory_limiters_would_not_share(replicas):
    """The control: two in-process windows let the user through twice as often."""
    local = [InMemoryRateLimiter(3, 1.0) for _ in range(2)]
    waits = [await r.check("burst") for _ in range(10) for r in local]
    assert sum(w == 0.0 for w in waits) == 2 * 3


async def test_chat_state_is_shared(redis_server, request):
    prefix = f"test:{request.node.name}:"
    a, b = (RedisChatState(connect(redis_server.url), prefix=prefix) for _ in range(2))
    try:
        assert not await b.get_flag("seen:1")
        await a.set_flag("seen:1", True)
        assert await b.get_flag("seen:1")
        await b.set_flag("seen:1", False)
        assert not await a.get_flag("seen:1")
        assert await a.first_in("notice:u", 0.3) and not await b.first_in("notice:u", 0.3)
        await asyncio.sleep(0.35)
        assert await b.first_in("notice:u", 0.3)
        # A number answer's correction tokens, kept by one replica, found by the other; they expire.
        assert await b.get_text("number:telegram:1:2") is None
        await a.set_text("number:telegram:1:2", "0123456789abcdef,fedcba9876543210", 0.3)
        assert await b.get_text("number:telegram:1:2") == "0123456789abcdef,fedcba9876543210"
        await asyncio.sleep(0.35)
        assert await b.get_text("number:telegram:1:2") is None
    finally:
        await a.close()
        await b.close()


async def test_settings_pick_the_store(redis_server):
    shared = make_limiter(CoreConfig(redis_url=redis_server.url, rate=2, per_seconds=5.0))
    state = make_chat_state(CoreConfig(redis_url=redis_server.url))
    try:
        assert isinstance(shared, RedisRateLimiter) and (shared.rate, shared.per_seconds) == (2, 5.0)
        assert isinstance(state, RedisChatState)
    finally:
        await shared.close()
        await state.close()
    assert isinstance(make_limiter(CoreConfig()), InMemoryRateLimiter)


async def test_redis_outage_falls_back_to_the_local_window_and_recovers(caplog):
    """Redis stops: requests keep being answered under the per-process window, one log line; Redis returns:
    shared again, one more line. Nothing raises."""
    server = RedisServer().start()
    limiter = RedisRateLimiter(connect(server.url, timeout=0.3), 2, 60.0, prefix="outage:")
    limiter.health.retry_after = 0.2
    try:
        caplog.set_level(logging.WARNING, logger="bots.redis_store")
        assert await limiter.check("u") == 0.0  # counted in Redis
        server.stop()
        during = [await limiter.check("u") for _ in range(4)]
        await asyncio.sleep(0.25)
        during += [await limiter.check("u") for _ in range(2)]  # retried Redis once, still down
        assert during[:2] == [0.0, 0.0] and all(w > 0 for w in during[2:])  # the local window: 2 per minute
        assert caplog.text.count("Redis unreachable") == 1
        server.start()
        await asyncio.sleep(0.25)
        assert await limiter.check("v") == 0.0
        assert limiter.health.down_since is None and caplog.text.count("Redis is back") == 1
    finally:
        await limiter.close()
        server.close()


async def test_pending_answers_are_shared_claimed_once_forgotten_and_expire(redis_server, request):
    """The right/wrong buttons' store: an answer kept by one replica is read and claimed through another;
    of racing taps exactly one claims it; /forget deletes one user's answers only; they expire."""
    prefix = f"test:{request.node.name}:"
    a, b = (RedisPending(connect(redis_server.url), prefix=prefix, ttl=1.0) for _ in range(2))
    try:
        token = await a.add("u-alice", bytes(range(256)) * 3 + bytes(16), 4, "v1", "telegram")
        entry = await b.get(token)
        assert entry is not None and (entry.owner, entry.predicted, entry.model_version, entry.label) == (
            "u-alice", 4, "v1", None)
        assert entry.pixels == bytes(range(256)) * 3 + bytes(16)
        wins = await asyncio.gather(*(store.claim(token, label) for store, label in [(a, 3), (b, 5)] * 4))
        assert sum(wins) == 1
        assert (await a.get(token)).label == [3, 5][wins.index(True) % 2]
        await b.release(token)
        assert (await a.get(token)).label is None and await a.claim(token, 7)

        mine = [await a.add("u-bob", bytes(784), d, "v1", "discord") for d in range(3)]
        assert await b.forget("u-bob") == 3 and [await a.get(t) for t in mine] == [None] * 3
        assert (await b.get(token)).owner == "u-alice"  # someone else's answer stays
        await asyncio.sleep(1.1)
        assert await b.get(token) is None and not await b.claim(token, 1)  # expired: no resurrected key
        assert not await a._client.exists(f"{prefix}pending:{token}")
    finally:
        await a.close()
        await b.close()


async def test_pending_answers_while_redis_is_down(caplog):
    """No local stand-in (another replica could not see it): no buttons, a tap says try again, one log line."""
    server = RedisServer().start()
    store = RedisPending(connect(server.url, timeout=0.3), prefix="outage-pending:")
    store.health.retry_after = 0.2
    try:
        caplog.set_level(logging.WARNING, logger="bots.redis_store")
        token = await store.add("u-x", bytes(784), 1, "v1", "telegram")
        server.stop()
        for call in (store.get(token), store.claim(token, 2), store.add("u-x", bytes(784), 1, "v1", "telegram")):
            with pytest.raises(PendingUnavailable):
                await call
        assert caplog.text.count("Redis unreachable") == 1
        server.start()
        await asyncio.sleep(0.25)
        assert (await store.get(token)) is None  # a restarted Redis without persistence forgets; no error
        assert store.health.down_since is None
    finally:
        await store.close()
        server.close()


async def test_benchmark_two_replica_processes_answer_exactly_the_limit():
    """benchmarks/ratelimit_replicas.py in its quick mode: two processes, one Redis, one user."""
    script = REPO_ROOT / "benchmarks" / "ratelimit_replicas.py"
    command = [sys.executable, str(script), "--mode", "limiters", "--requests", "40", "--limit", "7"]
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120,
                                     cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "shared (Redis): answered 7 of 40 (limit 7)" in result.stdout
    assert "in-memory per replica: answered 14 of 40 (limit 7)" in result.stdout
