"""Telegram in webhook mode as several replicas behind one URL, sharing Redis (DIGITS_REDIS_URL).

Two real `digits-telegram` processes; each update is delivered to one of them (round-robin here, as a
load balancer may). Nothing a user sees may depend on which replica got the message: the per-user
rate limit, the one flood notice, the /seen switch, and the right/wrong buttons (an answer sent by one
replica, corrected through the other) all hold across replicas.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
import redis

from bots import replies
from bots.feedback import DEFAULT_PENDING_FILE, parse_button_id
from bots.i18n import translator
from testkit.fake_telegram import FakeTelegram
from testkit.photos import phone_photo
from testkit.redis_server import RedisServer
from testkit.telegram_replicas import TelegramReplicas

LIMIT = 3


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


def wait_sent(fake: FakeTelegram, method: str, count: int, chat: int | None = None, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    while len(sent := fake.sent(method, chat_id=chat)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{method}: {len(sent)} of {count} calls")
        time.sleep(0.05)
    return sent


def tap(fake: FakeTelegram, replicas: TelegramReplicas, replica: int, message: dict, data: str, user: int,
        language: str | None = None) -> str:
    """A tap on a button of `message`, delivered to `replica`; returns the text of the bot's answer to it."""
    _, query_id = fake.callback_query(message, data, user_id=user, language_code=language)
    assert replicas.post(fake.held[-1], replica) == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for call in fake.sent("answerCallbackQuery"):
            if call.params.get("callback_query_id") == query_id:
                return str(call.params.get("text"))
        time.sleep(0.05)
    raise TimeoutError(f"no answer to {query_id}")


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


def test_an_answer_from_one_replica_is_corrected_through_the_other(tmp_path, redis_server, store_server,
                                                                   digit_samples):
    """Replica 0 sends the answer with its buttons; the taps land on replica 1, which has never seen it."""
    env = {"DIGITS_SERVER": store_server.target, "DIGITS_REDIS_URL": redis_server.url,
           "DIGITS_FEEDBACK_SECRET": "replicas-share-this-feedback-secret"}
    uk = translator("uk")
    user, stranger = 6300, 6301
    with FakeTelegram() as fake, TelegramReplicas(fake, 2, env, tmp_path) as replicas:
        fake.photo(phone_photo(digit_samples[2][0]), chat_id=user, user_id=user, language_code="uk")
        assert replicas.post(fake.held[-1], 0) == 200
        answer = wait_sent(fake, "sendMessage", 1, chat=user)[0]
        (right, wrong), = answer.params["reply_markup"]["inline_keyboard"]
        token, _ = parse_button_id(wrong["callback_data"])
        message = answer.result

        assert tap(fake, replicas, 1, message, right["callback_data"], stranger) == replies.NOT_YOURS
        assert tap(fake, replicas, 1, message, wrong["callback_data"], user, "uk") == uk(replies.WHICH_DIGIT)
        digits = wait_sent(fake, "editMessageReplyMarkup", 1)[0].params["reply_markup"]["inline_keyboard"]
        assert [b["callback_data"] for row in digits for b in row][6] == f"fb:{token}:6"
        assert tap(fake, replicas, 1, message, f"fb:{token}:6", user, "uk") == replies.recorded_text(6, uk)
        assert wait_sent(fake, "editMessageText", 1)[0].params["text"].endswith(
            uk(replies.CORRECTED_LINE).format(digit=6))
        assert tap(fake, replicas, 0, message, f"fb:{token}:2", user, "uk") == uk(replies.ALREADY_RECORDED)

        shared = redis.Redis.from_url(redis_server.url)
        try:
            assert shared.hget(f"digits:pending:{token}", "label") == b"6"  # the state the replicas shared
            with sqlite3.connect(store_server.db) as conn:
                rows = conn.execute("SELECT predicted, correct, source FROM feedback").fetchall()
            assert [r[1:] for r in rows] == [(6, "telegram")]  # one record for three taps by the sender

            fake.message(chat_id=user, user_id=user, text="/forget", language_code="uk")
            assert replicas.post(fake.held[-1], 1) == 200
            done = wait_sent(fake, "sendMessage", 2, chat=user)[-1].params["text"]
            assert done == uk(replies.FORGOTTEN).format(count=1)
            assert not shared.exists(f"digits:pending:{token}")
        finally:
            shared.close()
        outputs = replicas.stop()
    assert not (tmp_path / DEFAULT_PENDING_FILE).exists()  # no local file the replicas could have shared
    assert not [o for o in outputs if "Traceback" in o or "Redis unreachable" in o], outputs
