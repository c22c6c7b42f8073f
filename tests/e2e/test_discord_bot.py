"""End to end: the real discord.py bot against the fake Discord (testkit/fake_discord.py) and a real digits server.

Each test uses its own fake user, so the per-user rate limit (small on purpose) only bites where a test wants it.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass

import discord
import numpy as np
import pytest
import pytest_asyncio
from discord.gateway import DiscordWebSocket
from PIL import Image

from bots.core import Recognizer
from bots.discord_bot import NO_IMAGE_TEXT, DiscordConfig, serve
from bots.replies import NO_DIGIT_TEXT, NOT_A_DIGIT_TEXT, NOT_IMAGE_TEXT, UNAVAILABLE_TEXT
from client import DigitsClient
from testkit.fake_discord import (
    CALLBACK_CHANNEL_MESSAGE,
    CALLBACK_DEFERRED_CHANNEL_MESSAGE,
    EPHEMERAL_FLAG,
    FakeDiscord,
)
from testkit.not_digits import refused_photos
from testkit.photos import blank_photo, phone_photo

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.fake-discord-bot-token.do-not-log-me"
RATE = 4  # requests per user per minute in this module's bot
LOW_CONFIDENCE = 0.80  # the Recognizer default: below it the answer names a runner-up


class LogCollector(logging.Handler):
    """Everything logged at any level while the module runs, to prove the token never shows up."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs():
    collector = LogCollector()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    yield collector
    root.removeHandler(collector)
    root.setLevel(old_level)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fake(logs):
    server = await FakeDiscord(TOKEN, heartbeat_interval_ms=500).start()  # many heartbeats, each must be ACKed
    yield server
    await server.stop()


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake, digits_server):
    client = DigitsClient(digits_server.target, timeout=5.0, retries=2)
    recognizer = Recognizer(client, rate=RATE, per_seconds=60.0, max_bytes=2 * 1024 * 1024)
    config = DiscordConfig(TOKEN, api_base=fake.api_base, gateway_url=None, guild_id=None, message_content=True)
    task = asyncio.create_task(serve(config, recognizer))
    await fake.wait_ready()
    yield task
    assert not task.done(), f"the bot stopped by itself: {task}"
    await _stop(task)
    await client.close()


@dataclass(frozen=True)
class Reading:
    """A photo of an MNIST test digit, its true label, and what the server itself reads in it."""

    data: bytes
    label: int
    digit: int
    confidence: float


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def readings(digits_server, digit_samples) -> list[Reading]:
    """Photos the model reads right, best first, with distinct labels (asked of the server, so the
    tests hold for whichever checkpoint is shipped; a well-trained one reads them all)."""
    right: dict[int, Reading] = {}
    async with DigitsClient(digits_server.target, timeout=10.0) as client:
        for label, images in digit_samples.items():
            for img in images:
                data = phone_photo(img)
                p = await client.predict_image(data)
                if p.digit == label and (label not in right or p.confidence > right[label].confidence):
                    right[label] = Reading(data, label, p.digit, p.confidence)
    assert right, "the shipped model reads none of the 50 sample photos right"
    return sorted(right.values(), key=lambda r: -r.confidence)


@pytest.fixture(scope="module")
def clear(readings) -> Reading:
    return readings[0]


def assert_digit_embed(reply, reading: Reading) -> None:
    """The reply is the digit embed for `reading`: its true label, confidence, runner-up iff unsure, seen.png."""
    assert reply.embeds, f"expected an embed, got {reply.payload!r}"
    embed = reply.embeds[0]
    assert embed["title"].endswith(f" {reading.label}"), embed
    fields = {f["name"]: f["value"] for f in embed.get("fields", [])}
    assert fields["Confidence"].endswith("%"), embed
    assert ("Runner-up" in fields) == (reading.confidence < LOW_CONFIDENCE), embed
    assert embed["thumbnail"]["url"] == "attachment://seen.png"
    seen = Image.open(io.BytesIO(reply.files["seen.png"]))
    assert seen.format == "PNG" and seen.size == (224, 224)
    # The model's 28x28 input upscaled with nearest neighbour: 8x8 blocks of one value, with ink and background.
    pixels = np.asarray(seen.convert("L"))
    assert (pixels[::8, ::8].repeat(8, 0).repeat(8, 1) == pixels).all()
    assert pixels.max() > 128 and pixels.min() < 64


async def test_login_sync_and_gateway_handshake(fake, bot):
    assert ("GET", "/users/@me") in fake.requests
    assert ("GET", "/gateway/bot") in fake.requests  # no DISCORD_GATEWAY_URL: discovered from REST
    commands = {c["name"]: c for c in fake.synced_commands["global"]}
    assert commands["digit"]["type"] == 1
    options = [{k: v for k, v in o.items() if k != "description_localizations"}  # (tests/e2e/test_discord_feedback)
               for o in commands["digit"]["options"]]
    assert options == [
        {"type": 11, "name": "image", "description": commands["digit"]["options"][0]["description"], "required": True}
    ]
    assert commands["Read digit"]["type"] == 3
    identify = fake.identifies[-1]
    assert identify["token_ok"] and identify["intents"] & (1 << 15)  # message-content intent requested
    await fake.wait_until(lambda: fake.heartbeats >= 3, what="heartbeats")
    assert len(fake.identifies) == 1  # ACKed heartbeats keep the one session alive (no zombie reconnects)
    assert fake.unauthorized == 0


async def test_slash_command_reads_digits(fake, bot, readings):
    user = fake.new_user()
    for reading in readings[:3]:
        token = await fake.invoke_slash("digit", fake.attachment(reading.data), user=user)
        reply = await fake.final_reply(token)
        first = fake.replies_to(token)[0]
        assert first.kind == "callback" and first.payload["type"] == CALLBACK_DEFERRED_CHANNEL_MESSAGE
        assert reply.kind == "followup"
        assert_digit_embed(reply, reading)


async def test_slash_command_in_a_dm(fake, bot, clear):
    token = await fake.invoke_slash("digit", fake.attachment(clear.data), dm=True, user=fake.new_user())
    assert_digit_embed(await fake.final_reply(token), clear)


async def test_context_menu_reads_digit(fake, bot, clear):
    message = fake.message("look at this", [fake.attachment(b"%PDF-1.4", "notes.pdf", "application/pdf"),
                                            fake.attachment(clear.data)])
    token = await fake.invoke_message_command("Read digit", message, user=fake.new_user())
    assert_digit_embed(await fake.final_reply(token), clear)


async def test_mention_and_dm_read_digit(fake, bot, readings):
    user = fake.new_user()
    first, second = readings[0], readings[min(1, len(readings) - 1)]
    ignored = await fake.send_message("no mention", [fake.attachment(first.data)], author=user)
    mention = await fake.send_message("what is it?", [fake.attachment(first.data)], mention_bot=True, author=user)
    reply = await fake.final_reply(mention["id"])
    assert reply.kind == "message"
    assert_digit_embed(reply, first)
    assert reply.payload["allowed_mentions"]["parse"] == []  # a reply never pings anyone
    assert ("POST", f"/channels/{fake.channel_id}/typing") in fake.requests
    dm = await fake.send_message("", [fake.attachment(second.data, "d.png", "image/jpeg")], dm=True, author=user)
    assert_digit_embed(await fake.final_reply(dm["id"]), second)
    # "@digits" in reply to someone else's photo reads that photo.
    answer = await fake.send_message("this one?", mention_bot=True, author=user, reply_to=ignored)
    assert_digit_embed(await fake.final_reply(answer["id"]), first)
    assert fake.replies_to(ignored["id"]) == []  # a guild message that does not mention the bot is not its business
    # Replying "thanks @digits" to the bot's own answer does not make it read its own thumbnail again.
    own = fake.message("", [fake.attachment(reply.files["seen.png"], "seen.png", "image/png")], author=fake.bot_user)
    thanks = await fake.send_message("thanks", mention_bot=True, author=user, reply_to=own)
    assert "handwritten digit" in (await fake.final_reply(thanks["id"])).content


async def test_not_an_image_is_refused_before_download(fake, bot):
    attachment = fake.attachment(b"%PDF-1.4 not a digit", "homework.pdf", "application/pdf")
    token = await fake.invoke_slash("digit", attachment, user=fake.new_user())
    reply = await fake.final_reply(token)
    assert reply.kind == "callback" and reply.payload["type"] == CALLBACK_CHANNEL_MESSAGE
    assert reply.content == NOT_IMAGE_TEXT and reply.flags & EPHEMERAL_FLAG
    assert attachment["id"] not in fake.cdn_downloads


async def test_too_large_is_refused_before_download(fake, bot, clear):
    attachment = fake.attachment(clear.data, size=25 * 1024 * 1024)
    message = await fake.send_message("", [attachment], mention_bot=True, author=fake.new_user())
    reply = await fake.final_reply(message["id"])
    assert "too large" in reply.content and "2 MB" in reply.content
    assert attachment["id"] not in fake.cdn_downloads


async def test_corrupt_image_gets_not_an_image(fake, bot):
    attachment = fake.attachment(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50, "digit.png", "image/png")
    token = await fake.invoke_slash("digit", attachment, user=fake.new_user())
    reply = await fake.final_reply(token)
    assert reply.kind == "followup" and reply.content == NOT_IMAGE_TEXT
    assert attachment["id"] in fake.cdn_downloads  # metadata looked fine, so it was downloaded and checked


async def test_a_letter_gets_not_a_digit(fake, bot, shipped_model_path):
    letter = refused_photos(shipped_model_path)[1]
    token = await fake.invoke_slash("digit", fake.attachment(letter.photo), user=fake.new_user())
    assert (await fake.final_reply(token)).content == NOT_A_DIGIT_TEXT


async def test_blank_photo_gets_no_digit(fake, bot):
    token = await fake.invoke_slash("digit", fake.attachment(blank_photo()), user=fake.new_user())
    assert (await fake.final_reply(token)).content == NO_DIGIT_TEXT


async def test_empty_file_and_missing_image(fake, bot):
    user = fake.new_user()
    token = await fake.invoke_slash("digit", fake.attachment(b"", "empty.jpg", "image/jpeg"), user=user)
    assert (await fake.final_reply(token)).content == NOT_IMAGE_TEXT
    pdf_only = fake.message("see attached", [fake.attachment(b"%PDF-1.4", "a.pdf", "application/pdf")])
    token = await fake.invoke_message_command("Read digit", pdf_only, user=user)
    assert (await fake.final_reply(token)).content == NOT_IMAGE_TEXT  # not silence, not a download
    token = await fake.invoke_message_command("Read digit", fake.message("just text"), user=user)
    reply = await fake.final_reply(token)
    assert reply.content == NO_IMAGE_TEXT and reply.flags & EPHEMERAL_FLAG
    message = await fake.send_message("hello", mention_bot=True, author=user)
    assert "handwritten digit" in (await fake.final_reply(message["id"])).content  # the core's help text


async def test_rate_limit_is_per_user_and_polite(fake, bot, clear):
    flooder, other = fake.new_user("flooder"), fake.new_user("other")
    data = clear.data
    tokens = await asyncio.gather(*(fake.invoke_slash("digit", fake.attachment(data), user=flooder)
                                    for _ in range(RATE + 6)))  # a burst, all at once
    replies = [await fake.final_reply(t) for t in tokens]
    assert sum(bool(r.embeds) for r in replies) == RATE
    limited = [r for r in replies if not r.embeds]
    assert all("faster than I can read" in r.content and r.flags & EPHEMERAL_FLAG for r in limited)
    token = await fake.invoke_slash("digit", fake.attachment(data), user=other)
    assert (await fake.final_reply(token)).embeds


async def test_server_down_then_recovers(fake, bot, clear, digits_server):
    data = clear.data
    user = fake.new_user()
    await asyncio.to_thread(digits_server.stop)
    try:
        token = await fake.invoke_slash("digit", fake.attachment(data), user=user)
        assert (await fake.final_reply(token, timeout=30)).content == UNAVAILABLE_TEXT
        message = await fake.send_message("", [fake.attachment(data)], mention_bot=True, author=user)
        assert (await fake.final_reply(message["id"], timeout=30)).content == UNAVAILABLE_TEXT
    finally:
        await asyncio.to_thread(digits_server.start)
    token = await fake.invoke_slash("digit", fake.attachment(data), user=user)
    assert_digit_embed(await fake.final_reply(token, timeout=30), clear)


async def test_gateway_drop_reconnects(fake, bot, clear):
    before = len(fake.identifies)
    await fake.disconnect_all(code=4000)
    await fake.wait_until(lambda: len(fake.identifies) > before and fake.connected, 30, "the bot to reconnect")
    token = await fake.invoke_slash("digit", fake.attachment(clear.data), user=fake.new_user())
    assert_digit_embed(await fake.final_reply(token), clear)


async def test_without_message_content_intent_and_guild_sync(digits_server, clear, caplog):
    """Discord refuses the privileged intent (close 4014): the bot says so and runs without it."""
    fake = await FakeDiscord(TOKEN, grant_message_content=False).start()
    client = DigitsClient(digits_server.target, timeout=5.0)
    config = DiscordConfig(TOKEN, api_base=fake.api_base, gateway_url=fake.gateway_url, guild_id=fake.guild_id)
    caplog.set_level(logging.INFO)
    saved = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY  # process-wide in discord.py
    task = asyncio.create_task(serve(config, Recognizer(client)))
    try:
        await fake.wait_ready()
        assert [bool(i["intents"] & (1 << 15)) for i in fake.identifies] == [True, False]
        assert "refused the message-content intent" in caplog.text
        assert ("GET", "/gateway/bot") not in fake.requests  # DISCORD_GATEWAY_URL wins
        assert set(fake.synced_commands) == {str(fake.guild_id)}  # guild sync only, nothing global
        token = await fake.invoke_slash("digit", fake.attachment(clear.data))
        assert_digit_embed(await fake.final_reply(token), clear)
        # Discord still shows a bot the content of messages that mention it.
        message = await fake.send_message("", [fake.attachment(clear.data)], mention_bot=True)
        assert_digit_embed(await fake.final_reply(message["id"]), clear)
    finally:
        await _stop(task)
        await client.close()
        await fake.stop()
        discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved  # the module's bot keeps its fake


async def test_auto_sharded_client_answers_on_every_shard(digits_server, clear):
    """DISCORD_SHARD_COUNT: one AutoShardedClient runs each shard's gateway session; the fake routes a guild's
    events to shard (guild_id >> 22) % count and DMs to shard 0, as Discord does, and each is answered once."""
    fake = await FakeDiscord(TOKEN).start()
    count = next(n for n in range(2, 9) if (fake.guild_id >> 22) % n)  # the guild lands on a shard other than 0
    guild_shard = (fake.guild_id >> 22) % count
    client = DigitsClient(digits_server.target, timeout=5.0)
    config = DiscordConfig(TOKEN, api_base=fake.api_base, gateway_url=None, guild_id=None, shard_count=count)
    saved = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY  # process-wide in discord.py
    task = asyncio.create_task(serve(config, Recognizer(client)))
    try:
        await fake.wait_until(lambda: len(fake.ready_shards) == count, 60, f"{count} shards to be READY")
        assert sorted(fake.ready_shards) == [(i, count) for i in range(count)]
        assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(i, count) for i in range(count)]
        in_guild = await fake.invoke_slash("digit", fake.attachment(clear.data), user=fake.new_user())
        assert_digit_embed(await fake.final_reply(in_guild), clear)
        in_dm = await fake.invoke_slash("digit", fake.attachment(clear.data), dm=True, user=fake.new_user())
        assert_digit_embed(await fake.final_reply(in_dm), clear)
        await asyncio.sleep(0.3)
        assert len(fake.replies_to(in_guild)) == 2 and len(fake.replies_to(in_dm)) == 2  # deferral + answer, once
        interactions = [shard for shard, event in fake.dispatched if event == "INTERACTION_CREATE"]
        assert interactions == [(guild_shard, count), (0, count)]
    finally:
        await _stop(task)
        await client.close()
        await fake.stop()
        discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


async def test_token_never_logged(fake, bot, logs):
    assert len(logs.lines) > 20  # the collector really saw the bot's debug logging
    assert not [line for line in logs.lines if TOKEN in line]
