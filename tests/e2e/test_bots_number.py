"""End to end: a photo of a number sent to the real bots (python-telegram-bot against the fake Bot API,
discord.py against the fake Discord) and a real digits server. The reply is the number in bold, and the
picture shown (Telegram's /seen, Discord's thumbnail) is the photo with a box over each digit exactly
where the server's Read says it is.

The truth for each photo is asked of the server directly (Read), so the tests hold for whichever
checkpoint is shipped; they check the bots' drawing, not the model."""

from __future__ import annotations

import asyncio
import io
import itertools

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image, ImageOps

from bots.annotate import BOX_COLOUR, MAX_SIDE
from bots.config import CoreConfig
from bots.core import Recognizer
from bots.discord_bot import DiscordConfig, serve
from bots.telegram_bot import NUMBER_SEEN_CAPTION, RECOGNIZER_KEY, build_application
from client import DigitsClient, Reading, SeveralDigits
from testkit.fake_discord import FakeDiscord
from testkit.fake_telegram import FakeTelegram
from testkit.robustness_set import compose, photo

pytestmark = pytest.mark.asyncio(loop_scope="module")

DISCORD_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.fake-discord-bot-token.number-tests"
_users = itertools.count(9000)


def jpeg(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92, **options)
    return buf.getvalue()


def orientation(data: bytes) -> int | None:
    with Image.open(io.BytesIO(data)) as img:
        return img.getexif().get(0x0112)


def rotated_for_exif(data: bytes) -> bytes:
    """The same photo as a phone stores it when turned sideways: the pixels turned, EXIF orientation 6
    saying how to turn them back (what a JPEG sent as a file keeps)."""
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(upright.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def number_photos(digits_server, digit_samples) -> list[tuple[bytes, Reading]]:
    """Photos of numbers that Predict refuses as SEVERAL_DIGITS (so the bots take the Read path), each
    with the server's own Read of it: an upright 640x480 photo and a portrait one turned by EXIF."""
    found: list[tuple[bytes, Reading]] = []
    async with DigitsClient(digits_server.target, timeout=20) as client:
        for seed, text in enumerate(["2026", "4138", "907", "35"]):
            rng = np.random.default_rng(seed)
            strip = compose([digit_samples[int(c)][0] for c in text], [0.3] * (len(text) - 1), rng)
            _, data = photo(strip, rng, ink="black", size=(640, 480))
            for candidate in (data, rotated_for_exif(data)):
                try:
                    await client.predict_image(candidate)
                    continue  # read as one digit: not a number photo
                except SeveralDigits:
                    found.append((candidate, await client.read_image(candidate)))
            if len(found) >= 2:
                break
    assert found, "the server read none of the number photos as several digits"
    assert any(orientation(data) == 6 for data, _ in found), "no EXIF-turned photo among them"
    return found


def upright_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        w, h = img.size
        return (h, w) if orientation(data) in (5, 6, 7, 8) else (w, h)


def assert_boxes_drawn(png: bytes, data: bytes, reading: Reading) -> None:
    """The picture is the upright photo downscaled to MAX_SIDE, and each box Read gave is drawn in the
    box colour along its four edges, scaled to the picture."""
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    w, h = upright_size(data)
    scale = MAX_SIDE / max(w, h)
    assert image.size == (round(w * scale), round(h * scale))
    pixels = np.asarray(image.convert("RGB"))
    box_colour = (pixels == BOX_COLOUR).all(axis=2)
    sx, sy = image.width / w, image.height / h
    assert reading.digits
    for d in reading.digits:
        x, y, bw, bh = d.box
        left, top = round(x * sx), round(y * sy)
        right, bottom = round((x + bw) * sx) - 1, round((y + bh) * sy) - 1
        for name, edge in (("left", box_colour[top:bottom + 1, left]), ("right", box_colour[top:bottom + 1, right]),
                           ("top", box_colour[top, left:right + 1]), ("bottom", box_colour[bottom, left:right + 1])):
            assert edge.mean() >= 0.8, f"{name} edge of box {d.box} (digit {d.digit}) not drawn: {edge.mean():.2f}"
    assert box_colour.mean() < 0.25, "the photo itself must still show"


# -- Telegram -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def telegram():
    with FakeTelegram() as api:
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def telegram_bot(telegram, digits_server):
    app = build_application(telegram.token, api_url=telegram.root,
                            config=CoreConfig(digits_server=digits_server.target, timeout=10.0))
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    yield app
    await app.updater.stop()
    await app.stop()
    await app.bot_data[RECOGNIZER_KEY].close()
    await app.shutdown()


async def test_telegram_seen_shows_the_number_photo_with_each_digit_boxed(telegram, telegram_bot, number_photos):
    user = next(_users)
    telegram.message(chat_id=user, user_id=user, text="/seen on")
    await telegram.wait_for("sendMessage", chat_id=user)
    for data, reading in number_photos:
        if orientation(data) in (None, 1):
            _, mid = telegram.photo(data, chat_id=user, user_id=user)
        else:  # EXIF-turned: sent as a file (Telegram re-encodes a photo upright and drops the EXIF)
            _, mid = telegram.document(data, mime_type="image/jpeg", file_name="number.jpg", chat_id=user,
                                       user_id=user)
        answer = (await telegram.wait_for("sendMessage", reply_to=mid))[0]
        assert answer.params["parse_mode"] == "HTML"
        assert str(answer.params["text"]).startswith(f"<b>{reading.text.replace(chr(10), ' / ')}</b>, ")
        shown = (await telegram.wait_for("sendPhoto", reply_to=mid))[0]
        assert shown.params["caption"] == NUMBER_SEEN_CAPTION
        assert_boxes_drawn(shown.files["photo"], data, reading)


async def test_telegram_without_seen_sends_no_picture(telegram, telegram_bot, number_photos):
    user = next(_users)
    data, _ = number_photos[0]
    _, mid = telegram.photo(data, chat_id=user, user_id=user)
    await telegram.wait_for("sendMessage", reply_to=mid)
    await asyncio.sleep(0.3)
    assert not [c for c in telegram.sent("sendPhoto") if c.reply_to == mid]


# -- Discord --------------------------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def discord_fake():
    server = await FakeDiscord(DISCORD_TOKEN).start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def discord_bot(discord_fake, digits_server):
    client = DigitsClient(digits_server.target, timeout=10.0)
    config = DiscordConfig(DISCORD_TOKEN, api_base=discord_fake.api_base, message_content=True)
    task = asyncio.create_task(serve(config, Recognizer(client)))
    await discord_fake.wait_ready()
    yield task
    assert not task.done(), f"the bot stopped by itself: {task}"
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await client.close()


async def test_discord_thumbnail_is_the_number_photo_with_each_digit_boxed(discord_fake, discord_bot, number_photos):
    user = discord_fake.new_user()
    for data, reading in number_photos:
        token = await discord_fake.invoke_slash("digit", discord_fake.attachment(data, "number.jpg"), user=user)
        reply = await discord_fake.final_reply(token)
        embed = reply.embeds[0]
        assert embed["description"].startswith(f"**{reading.text.replace(chr(10), ' / ')}**, ")
        assert embed["thumbnail"]["url"] == "attachment://seen.png"
        assert_boxes_drawn(reply.files["seen.png"], data, reading)
    data, reading = number_photos[0]
    message = await discord_fake.send_message("", [discord_fake.attachment(data, "n.jpg")], dm=True, author=user)
    reply = await discord_fake.final_reply(message["id"])
    assert reply.embeds[0]["description"].startswith(f"**{reading.text.replace(chr(10), ' / ')}**")
    assert_boxes_drawn(reply.files["seen.png"], data, reading)
