"""End to end: the real python-telegram-bot Application, a fake Bot API over HTTP, a real digits server.

Nothing in the bot or the library is mocked; each test talks to the bot only through Telegram updates
and checks what the bot sent back to the (fake) Bot API.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from bots import replies as core
from bots.config import CoreConfig
from bots.redact import protect_secrets
from bots.telegram_bot import DOWNLOAD_FAILED, RECOGNIZER_KEY, STATIC_STICKERS_ONLY, build_application
from client import DigitsClient
from testkit.fake_telegram import BOT_USERNAME, FakeTelegram
from testkit.not_digits import refused_photos
from testkit.photos import phone_photo

pytestmark = pytest.mark.asyncio(loop_scope="module")

_users = itertools.count(5000)


def new_user() -> int:
    """A fresh user/chat id per test, so per-user rate limits never leak between tests."""
    return next(_users)


@pytest.fixture(scope="module")
def fake():
    with FakeTelegram() as api:
        yield api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(fake, digits_server):
    config = CoreConfig(digits_server=digits_server.target, timeout=3.0)
    app = build_application(fake.token, api_url=fake.root, config=config)
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    yield app
    await app.updater.stop()
    await app.stop()
    await app.bot_data[RECOGNIZER_KEY].close()
    await app.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def judged_photos(digits_server, digit_samples):
    """One photo per digit with the server's own verdict on it, asked directly (not through the bot)."""
    judged = []
    async with DigitsClient(digits_server.target) as client:
        for label in range(10):
            for pixels in digit_samples[label]:
                photo = phone_photo(pixels)
                prediction = await client.predict_image(photo)
                judged.append((label, photo, prediction))
    return judged


def text_of(call) -> str:
    return str(call.params.get("text", ""))


async def test_start_and_help_explain_what_to_send(fake, bot):
    user = new_user()
    for count, command in enumerate(("/start", "/help"), start=1):
        fake.message(chat_id=user, user_id=user, text=command)
        reply = (await fake.wait_for("sendMessage", chat_id=user, count=count))[-1]
        assert "photo" in text_of(reply) and "digit" in text_of(reply)
        assert "/seen" in text_of(reply)


async def test_digit_photos_get_the_right_digit_quoted(fake, bot, judged_photos):
    """Every reply names exactly what the server says about that photo; photos it reads right name the true label."""
    right = [(label, photo, p) for label, photo, p in judged_photos if p.digit == label]
    assert right, "the shipped model reads none of the 50 sample photos correctly"
    one_per_label = list({label: (label, photo, p) for label, photo, p in reversed(judged_photos)}.values())
    user = new_user()
    sent = [(fake.photo(photo, chat_id=user, user_id=user)[1], p) for _, photo, p in one_per_label]
    for mid, prediction in sent:
        reply = (await fake.wait_for("sendMessage", reply_to=mid, chat_id=user))[0]
        assert reply.params.get("parse_mode") == "HTML"
        assert f"<b>{prediction.digit}</b> ({prediction.confidence:.0%} sure)" in text_of(reply)
        if prediction.confidence < 0.80:
            other, other_conf = prediction.runner_up
            assert f"could be <b>{other}</b> ({other_conf:.0%})" in text_of(reply)
            assert "Tip:" in text_of(reply)
        else:
            assert "could be" not in text_of(reply)
    for label, photo, _ in right[:3]:
        _, mid = fake.photo(photo, chat_id=user + 100_000, user_id=user + 100_000)
        reply = (await fake.wait_for("sendMessage", reply_to=mid))[0]
        assert f"<b>{label}</b>" in text_of(reply).split("could be")[0]
    actions = fake.sent("sendChatAction", chat_id=user)
    assert actions and all(a.params["action"] == "typing" for a in actions)
    # Each update also carries a junk thumbnail: only the largest size may be downloaded.
    assert fake.files_named("thumb.jpg") and not (fake.files_named("thumb.jpg") & fake.downloaded())


def _rgba_png(pixels: np.ndarray) -> bytes:
    """Black ink on a fully transparent background: what drawing apps export."""
    alpha = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).resize((280, 280), Image.Resampling.BICUBIC)
    img = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    img.putalpha(alpha)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _webp(pixels: np.ndarray, size: int = 512) -> bytes:
    img = Image.open(io.BytesIO(phone_photo(pixels, size=(size, size), fmt="PNG")))
    buf = io.BytesIO()
    img.save(buf, format="WEBP")
    return buf.getvalue()


async def test_image_documents_and_static_stickers_are_read(fake, bot, digits_server, digit_samples):
    user = new_user()
    pixels = digit_samples[3][0]
    files = [
        ("document", _rgba_png(pixels), "image/png", "drawing.png"),
        ("document", phone_photo(pixels), "image/jpeg", "scan.jpg"),
        ("document", _webp(pixels), "image/webp", "digit.webp"),
        ("sticker", _webp(pixels), None, None),
    ]
    async with DigitsClient(digits_server.target) as client:
        for kind, data, mime, name in files:
            expected = await client.predict_image(data)
            if kind == "sticker":
                _, mid = fake.sticker(data, chat_id=user, user_id=user)
            else:
                _, mid = fake.document(data, mime_type=mime, file_name=name, chat_id=user, user_id=user)
            reply = (await fake.wait_for("sendMessage", reply_to=mid))[0]
            assert f"<b>{expected.digit}</b> ({expected.confidence:.0%} sure)" in text_of(reply), (kind, name)


async def test_a_letter_is_not_a_digit(fake, bot, shipped_model_path):
    user = new_user()
    _, mid = fake.photo(refused_photos(shipped_model_path)[0].photo, chat_id=user, user_id=user)
    reply = (await fake.wait_for("sendMessage", reply_to=mid))[0]
    assert text_of(reply) == core.NOT_A_DIGIT_TEXT
    assert "reply_markup" not in reply.params  # nothing to correct: no buttons


async def test_blank_photo_says_no_digit(fake, bot):
    user = new_user()
    blank = phone_photo(np.zeros((28, 28), dtype=np.uint8))
    _, mid = fake.photo(blank, chat_id=user, user_id=user)
    reply = (await fake.wait_for("sendMessage", reply_to=mid))[0]
    assert text_of(reply) == core.NO_DIGIT_TEXT
    typing = fake.sent("sendChatAction", chat_id=user)
    assert len(typing) == 1 and typing[0].at < reply.at  # the indicator never lingers after the answer


async def test_file_telegram_cannot_serve_gets_a_retry_hint(fake, bot):
    user = new_user()
    gone = {"file_id": "deleted-file", "file_unique_id": "gone", "width": 640, "height": 480, "file_size": 5000}
    _, mid = fake.message(chat_id=user, user_id=user, photo=[gone])
    reply = (await fake.wait_for("sendMessage", reply_to=mid))[0]
    assert text_of(reply) == DOWNLOAD_FAILED


async def test_not_an_image(fake, bot):
    """A PDF is refused from its declared type (never downloaded); corrupt and empty 'images' after download."""
    user = new_user()
    _, pdf = fake.document(b"%PDF-1.4 not a digit", mime_type="application/pdf", file_name="homework.pdf",
                           chat_id=user, user_id=user)
    _, corrupt = fake.photo(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, chat_id=user, user_id=user)
    _, empty = fake.document(b"", mime_type="image/png", file_name="empty.png", chat_id=user, user_id=user)
    _, text_file = fake.document(b"seven", mime_type="text/plain", file_name="seven.txt", chat_id=user, user_id=user)
    for mid in (pdf, corrupt, empty, text_file):
        reply = (await fake.wait_for("sendMessage", reply_to=mid))[0]
        assert text_of(reply) == core.NOT_IMAGE_TEXT
    refused = fake.files_named("homework.pdf") | fake.files_named("seven.txt")
    assert len(refused) == 2 and not (refused & fake.downloaded())


async def test_oversized_files_are_refused(fake, bot):
    """Refused from the size Telegram reports, before download; a file that lies about its size too."""
    user = new_user()
    _, big = fake.photo(b"\xff\xd8" + bytes(100), reported_size=25 * 1024 * 1024, name="big.jpg",
                        chat_id=user, user_id=user)
    huge = bytes(11 * 1024 * 1024)
    _, liar = fake.document(huge, mime_type="image/png", file_name="liar.png", reported_size=1000,
                            chat_id=user, user_id=user)
    for mid in (big, liar):
        reply = (await fake.wait_for("sendMessage", reply_to=mid))[0]
        assert "too large" in text_of(reply) and "10 MB" in text_of(reply)
    assert fake.files_named("big.jpg") and not (fake.files_named("big.jpg") & fake.downloaded())
    assert fake.files_named("liar.png") <= fake.downloaded()  # it had to be downloaded to find out


async def test_animated_sticker_is_declined(fake, bot):
    user = new_user()
    _, mid = fake.sticker(b"tgs-animation", animated=True, chat_id=user, user_id=user)
    reply = (await fake.wait_for("sendMessage", reply_to=mid))[0]
    assert text_of(reply) == STATIC_STICKERS_ONLY


async def test_flood_gets_one_polite_notice_and_service_continues(fake, bot, digit_samples):
    user = new_user()
    photo = phone_photo(digit_samples[1][0])
    mids = [fake.photo(photo, chat_id=user, user_id=user)[1] for _ in range(14)]
    await fake.wait_for("sendMessage", chat_id=user, count=11)
    await asyncio.sleep(0.7)
    replies = fake.sent("sendMessage", chat_id=user)
    notices = [r for r in replies if "faster than I can read" in text_of(r)]
    answered = [r for r in replies if "sure)" in text_of(r)]
    assert len(answered) == 10 and len(notices) == 1 and len(replies) == 11
    assert {r.reply_to for r in replies} <= set(mids)
    other = new_user()
    _, mid = fake.photo(photo, chat_id=other, user_id=other)
    assert "sure)" in text_of((await fake.wait_for("sendMessage", reply_to=mid))[0])


async def test_groups_only_answer_mentions_and_replies(fake, bot, digit_samples):
    group, user = -new_user(), new_user()
    photo = phone_photo(digit_samples[2][0])
    _, ignored = fake.photo(photo, chat_id=group, user_id=user, chat_type="supergroup", caption="look at this")
    _, mentioned = fake.photo(photo, chat_id=group, user_id=user, chat_type="supergroup",
                              caption=f"@{BOT_USERNAME} what is it?")
    _, replied = fake.photo(photo, chat_id=group, user_id=user, chat_type="group", reply_to_bot=True)
    await fake.wait_for("sendMessage", reply_to=mentioned)
    await fake.wait_for("sendMessage", reply_to=replied)
    await asyncio.sleep(0.5)
    assert len(fake.sent("sendMessage", chat_id=group)) == 2
    assert not [c for c in fake.sent(chat_id=group) if c.reply_to == ignored]


async def test_seen_toggle_sends_the_models_view(fake, bot, digit_samples):
    user = new_user()
    photo = phone_photo(digit_samples[4][0])
    fake.message(chat_id=user, user_id=user, text="/seen")
    assert "28x28" in text_of((await fake.wait_for("sendMessage", chat_id=user))[0])
    _, mid = fake.photo(photo, chat_id=user, user_id=user)
    shown = (await fake.wait_for("sendPhoto", reply_to=mid))[0]
    image = Image.open(io.BytesIO(shown.files["photo"]))
    assert image.format == "PNG" and image.size == (224, 224)
    fake.message(chat_id=user, user_id=user, text="/seen")
    assert "stop" in text_of((await fake.wait_for("sendMessage", chat_id=user, count=3))[-1])
    _, mid2 = fake.photo(photo, chat_id=user, user_id=user)
    await fake.wait_for("sendMessage", reply_to=mid2)
    await asyncio.sleep(0.3)
    assert not [c for c in fake.sent("sendPhoto") if c.reply_to == mid2]


async def test_handler_failure_is_logged_and_the_bot_keeps_serving(fake, bot, digit_samples, caplog):
    broken, ok = new_user(), new_user()
    fake.fail_chats.add(broken)
    photo = phone_photo(digit_samples[5][0])
    with caplog.at_level(logging.ERROR, logger="bots.telegram"):
        _, mid = fake.photo(photo, chat_id=broken, user_id=broken)
        await fake.wait_for("sendMessage", reply_to=mid, count=1)
        for _ in range(100):
            if "handler failed" in caplog.text:
                break
            await asyncio.sleep(0.05)
    assert "handler failed" in caplog.text and "Chat not found" in caplog.text
    _, mid = fake.photo(photo, chat_id=ok, user_id=ok)
    assert "sure)" in text_of((await fake.wait_for("sendMessage", reply_to=mid))[0])


async def test_bot_token_never_reaches_the_logs(fake, bot, digit_samples, caplog):
    photo = phone_photo(digit_samples[6][0])
    user = new_user()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    _, mid = fake.photo(photo, chat_id=user, user_id=user)
    await fake.wait_for("sendMessage", reply_to=mid)
    assert fake.token in caplog.text, "precondition: the HTTP client logs URLs that embed the token"
    caplog.clear()
    redactor = protect_secrets(fake.token)
    caplog.handler.addFilter(redactor)
    try:
        logging.getLogger("httpx").setLevel(logging.DEBUG)  # keep the URL lines: the filter must redact them
        _, mid = fake.photo(photo, chat_id=user, user_id=user)
        await fake.wait_for("sendMessage", reply_to=mid)
        await asyncio.sleep(0.2)
        assert "/bot***/" in caplog.text
        assert fake.token not in caplog.text
    finally:
        for handler in [caplog.handler, *logging.getLogger().handlers]:
            handler.removeFilter(redactor)


async def test_server_outage_is_explained_and_the_bot_recovers(fake, bot, digits_server, digit_samples):
    """Runs last: stops the shared digits server, then starts it again on the same port."""
    photo = phone_photo(digit_samples[7][0])
    user = new_user()
    digits_server.stop()
    try:
        _, mid = fake.photo(photo, chat_id=user, user_id=user)
        reply = (await fake.wait_for("sendMessage", reply_to=mid, timeout=20))[0]
        assert text_of(reply) == core.UNAVAILABLE_TEXT
    finally:
        await asyncio.to_thread(digits_server.start)
    _, mid = fake.photo(photo, chat_id=user, user_id=user)
    reply = (await fake.wait_for("sendMessage", reply_to=mid, timeout=20))[0]
    assert "sure)" in text_of(reply)

