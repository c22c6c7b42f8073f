"""Telegram in webhook mode as several replicas behind one URL, sharing Redis (DIGITS_REDIS_URL).

Two real `digits-telegram` processes; each update is delivered to one of them (round-robin here, as a
load balancer may). Nothing a user sees may depend on which replica got the message: the per-user
rate limit, the one flood notice, and the /seen switch all hold across replicas.
"""

from __future__ import annotations

import time

import pytest

from testkit.fake_telegram import FakeTelegram
from testkit.photos import phone_photo
from testkit.redis_server import RedisServer
from testkit.telegram_replicas import TelegramReplicas

LIMIT = 3


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


def settle(fake: FakeTelegram, chat: int, quiet: float = 1.5, timeout: float = 60.0) -> list:
    """The bot's messages to `chat` once it has sent nothing new for `quiet` seconds."""
    last, since, deadline = -1, time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        sent = fake.sent(chat_id=chat)
        if len(sent) != last:
            last, since = len(sent), time.monotonic()
        elif time.monotonic() - since > quiet:
            return sent
        time.sleep(0.1)
    raise TimeoutError("the replicas kept sending")


def test_replicas_share_the_limit_the_flood_notice_and_seen(tmp_path, redis_server, digits_server, digit_samples):
    env = {"DIGITS_SERVER": digits_server.target, "DIGITS_REDIS_URL": redis_server.url,
           "DIGITS_RATE_LIMIT": str(LIMIT), "DIGITS_RATE_WINDOW": "600"}
    photo = phone_photo(digit_samples[2][0])
    with FakeTelegram() as fake, TelegramReplicas(fake, 2, env, tmp_path) as replicas:
        # /seen on through replica 0; the next photo, through replica 1, also gets the model's view.
        seer = 6100
        fake.message(chat_id=seer, user_id=seer, text="/seen on")
        assert replicas.post(fake.held[-1], 0) == 200
        _, mid = fake.photo(photo, chat_id=seer, user_id=seer)
        assert replicas.post(fake.held[-1], 1) == 200
        assert fake.wait_for_sync("sendPhoto", reply_to=mid, timeout=30).files["photo"]

        # One user floods both replicas: LIMIT answers in all, and one polite notice in all.
        flooder = 6200
        for i in range(4 * LIMIT):
            fake.photo(photo, chat_id=flooder, user_id=flooder)
            assert replicas.post(fake.held[-1], i % 2) == 200
        texts = [str(c.params.get("text")) for c in settle(fake, flooder) if c.method == "sendMessage"]
        outputs = replicas.stop()
    assert sum("sure)" in t for t in texts) == LIMIT, texts
    assert sum("faster than I can read" in t for t in texts) == 1, texts
    assert len(texts) == LIMIT + 1
    assert not [o for o in outputs if "Traceback" in o or "Redis unreachable" in o], outputs
