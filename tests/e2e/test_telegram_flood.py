"""Outgoing flood control: python-telegram-bot's AIORateLimiter keeps a busy group under Telegram's limit.

The fake Bot API enforces a per-group limit the way Telegram does (a 429 with retry_after beyond it).
The same burst of group photos earns RetryAfters from a bot without the limiter (the control, so the
test can fail) and none from the bot as `build_application` builds it, with every photo answered.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from telegram.ext import AIORateLimiter

from bots.config import CoreConfig
from bots.telegram_bot import RECOGNIZER_KEY, FloodControl, build_application, flood_control
from testkit.fake_telegram import BOT_USERNAME, FakeTelegram
from testkit.photos import phone_photo

BOT_RATE = 4  # messages per second per group the bot allows itself in this test
FAKE_LIMIT = (2 * BOT_RATE, 1.0)  # what the fake tolerates: a leaky bucket of BOT_RATE/s stays well under it
PHOTOS = 12  # one reply each: 12 messages, far over FAKE_LIMIT in a burst

_groups = itertools.count(-9000, -1)


async def burst(fake: FakeTelegram, digits_server, photo: bytes, rate_limiter) -> tuple[int, list[int]]:
    """Run a bot, send PHOTOS group photos that mention it at once; returns (chat, message ids)."""
    app = build_application(fake.token, api_url=fake.root, rate_limiter=rate_limiter,
                            config=CoreConfig(digits_server=digits_server.target, timeout=5.0))
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    group = next(_groups)
    try:
        mids = [fake.photo(photo, chat_id=group, user_id=7000 + i, chat_type="supergroup",
                           caption=f"@{BOT_USERNAME} which digit?")[1] for i in range(PHOTOS)]
        if rate_limiter:
            for mid in mids:
                await fake.wait_for("sendMessage", reply_to=mid, timeout=30)
        else:
            for _ in range(100):
                if fake.flooded:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
    finally:
        await app.updater.stop()
        await app.stop()
        await app.bot_data[RECOGNIZER_KEY].close()
        await app.shutdown()
    return group, mids


async def test_a_busy_group_earns_no_retry_after(digits_server, digit_samples):
    photo = phone_photo(digit_samples[3][0])
    with FakeTelegram() as fake:
        fake.group_flood_limit = FAKE_LIMIT
        await burst(fake, digits_server, photo, rate_limiter=None)
        assert fake.flooded, "control: without flood control the burst should have earned a 429"
        fake.flooded.clear()

        limiter = FloodControl(overall_max_rate=30, overall_time_period=1, group_max_rate=BOT_RATE,
                               group_time_period=1, max_retries=0)
        group, mids = await burst(fake, digits_server, photo, rate_limiter=limiter)
        assert fake.flooded == []
        replies = [c for c in fake.sent("sendMessage", chat_id=group) if c.reply_to in mids]
        assert sorted(c.reply_to for c in replies) == sorted(mids)
        assert all("sure)" in str(c.params.get("text")) for c in replies)
        assert len(fake.sent("sendChatAction", chat_id=group)) == PHOTOS  # typing: unthrottled, never refused


def test_default_flood_control_uses_telegrams_published_limits():
    limiter = flood_control()
    assert isinstance(limiter, FloodControl) and isinstance(limiter, AIORateLimiter)
    assert (limiter._base_limiter.max_rate, limiter._base_limiter.time_period) == (30, 1)
    assert (limiter._group_max_rate, limiter._group_time_period, limiter._max_retries) == (20, 60, 2)
    app = build_application("1:x", config=CoreConfig())
    assert app.bot.rate_limiter is not None  # on by default


@pytest.mark.parametrize("off", [None, False])
def test_flood_control_can_be_turned_off(off):
    assert build_application("1:x", config=CoreConfig(), rate_limiter=off).bot.rate_limiter is None
