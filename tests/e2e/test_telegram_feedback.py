"""Corrections through Telegram, end to end: the real python-telegram-bot against the fake Bot API
(inline keyboards, callback queries), a real digits server keeping a real SQLite feedback store."""

from __future__ import annotations

import itertools
import re
import sqlite3
import stat

import pytest
import pytest_asyncio

from bots import replies
from bots.answer import Answer, Outcome
from bots.config import CoreConfig
from bots.feedback import FeedbackConfig, parse_button_id
from bots.i18n import LANGUAGES, translator
from bots.replies import LOW_CONFIDENCE_HINT, digit_text
from bots.telegram_bot import (
    COMMAND_DESCRIPTIONS,
    FEEDBACK_KEY,
    RECOGNIZER_KEY,
    SEEN_CAPTION,
    SEEN_HELP_TEXT,
    SEEN_OFF_TEXT,
    SEEN_ON_TEXT,
    TEXT_ONLY_TEXT,
    build_application,
)
from testkit.fake_telegram import FakeTelegram
from testkit.photos import phone_photo

pytestmark = pytest.mark.asyncio(loop_scope="module")

_users = itertools.count(7000)


@pytest.fixture(scope="module")
def fake():
    with FakeTelegram() as api:
        yield api


@pytest.fixture(scope="module")
def bot_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tg-bot")
    return FeedbackConfig(enabled=True, secret_file=root / "secret", pending_file=root / "pending.sqlite3")


async def start(app):
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    return app


async def stop(app):
    await app.updater.stop()
    await app.stop()
    await app.bot_data[RECOGNIZER_KEY].close()
    await app.shutdown()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(fake, store_server, bot_files):
    config = CoreConfig(digits_server=store_server.target, timeout=5.0)
    app = await start(build_application(fake.token, api_url=fake.root, config=config, feedback=bot_files))
    yield app
    await stop(app)


def records(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        query = "SELECT predicted, correct, source, user, length(pixels), model_version FROM feedback"
        return conn.execute(query).fetchall()


async def photo_answer(fake, digit_samples, user: int, language: str | None = None):
    """Send a photo; returns the bot's answer message (with its keyboard) as the fake recorded it."""
    photo = phone_photo(digit_samples[4][0])
    before = len(fake.sent("sendMessage", chat_id=user))
    fake.photo(photo, chat_id=user, user_id=user, language_code=language)
    calls = await fake.wait_for("sendMessage", chat_id=user, count=before + 1, timeout=30)
    return calls[-1]


def buttons(call) -> list[list[dict]]:
    return call.params["reply_markup"]["inline_keyboard"]


async def next_call(fake, method: str):
    """The next `method` call the bot makes (waits for one more than already recorded)."""
    return (await fake.wait_for(method, count=len(fake.sent(method)) + 1))[-1]


async def tap(fake, message: dict, data: str, user: int, language: str | None = None):
    before = len(fake.sent("answerCallbackQuery"))
    _, query_id = fake.callback_query(message, data, user_id=user, language_code=language)
    calls = await fake.wait_for("answerCallbackQuery", count=before + 1, timeout=15)
    return next(c for c in calls if c.params.get("callback_query_id") == query_id)


async def test_wrong_then_a_digit_is_recorded_once_by_the_sender_only(fake, bot, store_server, digit_samples):
    user, stranger = next(_users), next(_users)
    answer = await photo_answer(fake, digit_samples, user)
    (right, wrong), = buttons(answer)
    assert right["text"].endswith("Right") and wrong["text"].endswith("Wrong")
    token, choice = parse_button_id(wrong["callback_data"])
    assert choice == "no" and len(right["callback_data"]) <= 64
    message = answer.result
    before = len(records(store_server.db))

    refused = await tap(fake, message, right["callback_data"], stranger)  # someone else in the chat
    assert refused.params["text"] == replies.NOT_YOURS and refused.params.get("show_alert") is True
    assert len(records(store_server.db)) == before

    edits = len(fake.sent("editMessageReplyMarkup"))
    await tap(fake, message, wrong["callback_data"], user)
    markup = (await fake.wait_for("editMessageReplyMarkup", count=edits + 1))[-1].params["reply_markup"]
    markup = markup["inline_keyboard"]
    labels = [b["text"] for row in markup for b in row]
    assert labels == [*map(str, range(10)), "Not a digit"]

    edits = len(fake.sent("editMessageText"))
    thanks = await tap(fake, message, f"fb:{token}:3", user)
    assert thanks.params["text"] == "Thanks! Recorded: it's 3."
    edited = (await fake.wait_for("editMessageText", count=edits + 1))[-1]
    assert edited.params["text"].startswith("It's ") and edited.params["text"].endswith("\n✎ Corrected: 3")
    assert "reply_markup" not in edited.params
    rows = records(store_server.db)
    assert len(rows) == before + 1
    predicted, correct, source, pseudonym, size, version = rows[-1]
    assert (correct, source, size) == (3, "telegram", 784) and version
    assert pseudonym.startswith("u-") and str(user) not in pseudonym

    again = await tap(fake, message, f"fb:{token}:5", user)  # a second tap: no second record, no second thanks
    assert again.params["text"] == replies.ALREADY_RECORDED
    assert len(records(store_server.db)) == before + 1


async def test_right_is_recorded_as_the_answer_and_forget_deletes_it(fake, bot, store_server, digit_samples, bot_files):
    user = next(_users)
    answer = await photo_answer(fake, digit_samples, user)
    (right, _), = buttons(answer)
    edits = len(fake.sent("editMessageText"))
    thanks = await tap(fake, answer.result, right["callback_data"], user)
    assert thanks.params["text"].startswith("Thanks! Recorded: it's ")
    edited = (await fake.wait_for("editMessageText", count=edits + 1))[-1]
    assert "✓ Confirmed: " in edited.params["text"]
    mine = bot.bot_data[FEEDBACK_KEY].user("telegram", user)
    assert [r for r in records(store_server.db) if r[3] == mine and r[0] == r[1]]
    assert stat.S_IMODE(bot_files.secret_file.stat().st_mode) == 0o600  # generated on first run, owner-only

    fake.message(chat_id=user, user_id=user, text="/forget")
    reply = (await fake.wait_for("sendMessage", chat_id=user, count=2))[-1]
    assert reply.params["text"] == "Done: deleted 1 stored corrections of yours."
    assert not [r for r in records(store_server.db) if r[3] == mine]


async def test_a_digit_sent_as_a_reply_corrects_the_answer(fake, bot, store_server, digit_samples):
    user, stranger = next(_users), next(_users)
    answer = await photo_answer(fake, digit_samples, user)
    before = len(records(store_server.db))
    fake.message(chat_id=user, user_id=stranger, text="9", reply_to_message=answer.result)
    refused = (await fake.wait_for("sendMessage", chat_id=user, count=2))[-1]
    assert refused.params["text"] == replies.NOT_YOURS and len(records(store_server.db)) == before
    edits = len(fake.sent("editMessageText"))
    fake.message(chat_id=user, user_id=user, text=" 8 ", reply_to_message=answer.result)
    thanks = (await fake.wait_for("sendMessage", chat_id=user, count=3))[-1]
    assert thanks.params["text"] == "Thanks! Recorded: it's 8."
    assert (await fake.wait_for("editMessageText", count=edits + 1))[-1].params["text"].endswith("Corrected: 8")
    assert records(store_server.db)[-1][1] == 8 and len(records(store_server.db)) == before + 1


async def test_a_number_is_corrected_by_replying_with_the_right_number(fake, bot, store_server, store_number_photo):
    data, reading = store_number_photo
    read = reading.text.replace(" ", "").replace("\n", "")
    right = str((int(read[0]) + 1) % 10) + read[1:]  # the user says the first digit is another one
    user, stranger = next(_users), next(_users)
    fake.photo(data, chat_id=user, user_id=user)
    answer = (await fake.wait_for("sendMessage", chat_id=user, count=1, timeout=30))[-1]
    assert reading.text.replace("\n", " / ") in answer.params["text"] and "reply_markup" not in answer.params
    assert answer.params["text"].endswith("\n" + replies.NUMBER_HINT)
    before = len(records(store_server.db))

    async def reply(text: str, sender: int, count: int) -> str:
        fake.message(chat_id=user, user_id=sender, text=text, reply_to_message=answer.result)
        return (await fake.wait_for("sendMessage", chat_id=user, count=count, timeout=15))[-1].params["text"]

    assert await reply(right, stranger, 2) == replies.NOT_YOURS  # someone else in the chat may not correct it
    assert await reply(right[:-1], user, 3) == replies.NUMBER_LENGTH.format(count=len(read))  # a digit short
    assert len(records(store_server.db)) == before
    edits = len(fake.sent("editMessageText"))
    assert await reply(" ".join(right), user, 4) == f"Thanks! Recorded: {right}."  # spaces between digits are fine
    edited = (await fake.wait_for("editMessageText", count=edits + 1))[-1].params["text"]
    assert edited.endswith(f"\n✎ Corrected: {right}") and replies.NUMBER_HINT not in edited
    assert edited.startswith("<b>")  # the number stays in bold
    rows = records(store_server.db)[before:]
    assert [(p, c, src, size) for p, c, src, _, size, _ in rows] == [
        (int(a), int(b), "telegram", 784) for a, b in zip(read, right, strict=True)]
    assert len({r[3] for r in rows}) == 1 and rows[0][5] == reading.model_version
    assert await reply(read, user, 5) == replies.ALREADY_RECORDED  # thanked once, recorded once
    assert len(records(store_server.db)) == before + len(read)


async def test_a_number_read_with_a_digit_missing_is_corrected_piece_by_piece(fake, bot, store_server,
                                                                             miscounted_number_photo):
    """A touching pair read as one digit ("311" read "51"): the user's reply with the right number makes the
    bot fetch the photo again (getFile) and have it cut into those digits (Read with `expected`), so each
    digit is recorded with its own piece of the photo; without that the reply could not be matched."""
    data, text, reading = miscounted_number_photo
    user = next(_users)
    fake.photo(data, chat_id=user, user_id=user)
    answer = (await fake.wait_for("sendMessage", chat_id=user, count=1, timeout=30))[-1]
    assert answer.params["text"].endswith("\n" + replies.NUMBER_HINT)
    before, downloads = len(records(store_server.db)), len(fake.sent("getFile"))
    fake.message(chat_id=user, user_id=user, text=text, reply_to_message=answer.result)
    thanks = (await fake.wait_for("sendMessage", chat_id=user, count=2, timeout=30))[-1].params["text"]
    assert thanks == f"Thanks! Recorded: {text}.", (reading.text, thanks)
    assert len(fake.sent("getFile")) == downloads + 1  # the photo, fetched again for the correction
    with sqlite3.connect(store_server.db) as conn:
        rows = conn.execute("SELECT pixels, correct, source FROM feedback").fetchall()[before:]
    assert [(c, src) for _, c, src in rows] == [(int(d), "telegram") for d in text]
    assert len({px for px, _, _ in rows}) == len(text) and all(len(px) == 784 for px, _, _ in rows)


async def test_buttons_work_after_a_restart(fake, bot, store_server, digit_samples, bot_files):
    user = next(_users)
    answer = await photo_answer(fake, digit_samples, user)
    await stop(bot)  # the bot restarts; the message with its buttons stays in the chat
    config = CoreConfig(digits_server=store_server.target, timeout=5.0)
    again = await start(build_application(fake.token, api_url=fake.root, config=config, feedback=bot_files))
    try:
        before = len(records(store_server.db))
        thanks = await tap(fake, answer.result, buttons(answer)[0][1]["callback_data"].replace(":no", ":x"), user)
        assert thanks.params["text"] == "Thanks! Recorded: not a digit."
        assert records(store_server.db)[-1][1] == -1 and len(records(store_server.db)) == before + 1
    finally:
        await stop(again)
        await start(bot)  # (module fixture) back as it was for the tests after this one


async def test_feedback_off_shows_no_buttons(store_server, digit_samples):
    config = CoreConfig(digits_server=store_server.target, timeout=5.0)
    with FakeTelegram() as fake:  # its own Bot API: the module's bot keeps polling the other one
        await feedback_off(fake, config, digit_samples)


async def feedback_off(fake, config, digit_samples):
    app = await start(build_application(fake.token, api_url=fake.root, config=config, feedback=None))
    try:
        user = next(_users)
        answer = await photo_answer(fake, digit_samples, user)
        assert "sure)" in answer.params["text"] and "reply_markup" not in answer.params
        fake.message(chat_id=user, user_id=user, text="/forget")
        reply = (await fake.wait_for("sendMessage", chat_id=user, count=2))[-1]
        assert reply.params["text"] == replies.FEEDBACK_OFF
    finally:
        await stop(app)


@pytest.mark.parametrize("language", LANGUAGES)
async def test_replies_in_the_users_language(fake, bot, digit_samples, language):
    tr = translator(language)
    user = next(_users)
    fake.message(chat_id=user, user_id=user, text="/seen on", language_code=language)
    assert (await fake.wait_for("sendMessage", chat_id=user))[-1].params["text"] == tr(SEEN_ON_TEXT)
    photos = len(fake.sent("sendPhoto"))
    answer = await photo_answer(fake, digit_samples, user, language=f"{language}-XX")
    (right, wrong), = buttons(answer)
    assert right["text"] == "✓ " + tr(replies.RIGHT_BUTTON) and wrong["text"] == "✗ " + tr(replies.WRONG_BUTTON)
    assert answer.params["text"] == digit_text(answer_facts(answer.params["text"]), tr, replies.HTML)
    seen = (await fake.wait_for("sendPhoto", count=photos + 1))[-1]
    assert seen.params["caption"] == tr(SEEN_CAPTION) and seen.chat_id == user
    fake.message(chat_id=user, user_id=user, text="/seen off", language_code=language)
    assert (await fake.wait_for("sendMessage", chat_id=user, count=3))[-1].params["text"] == tr(SEEN_OFF_TEXT)
    fake.message(chat_id=user, user_id=user, text="hello?", language_code=language)
    assert (await fake.wait_for("sendMessage", chat_id=user, count=4))[-1].params["text"] == tr(TEXT_ONLY_TEXT)
    fake.message(chat_id=user, user_id=user, text="/help", language_code=language)
    help_text = (await fake.wait_for("sendMessage", chat_id=user, count=5))[-1].params["text"]
    assert help_text == "\n\n".join([tr(replies.HELP_TEXT), tr(SEEN_HELP_TEXT), tr(replies.PRIVACY_TEXT)])
    if language != "en":
        for message in (replies.PRIVACY_TEXT, SEEN_ON_TEXT, SEEN_OFF_TEXT, SEEN_CAPTION, TEXT_ONLY_TEXT):
            assert tr(message) != message  # really translated


def answer_facts(html_text: str) -> Answer:
    """The facts of a digit answer read back from its HTML (the bold digits and the percentages)."""
    digits = [int(d) for d in re.findall(r"<b>(\d)</b>", html_text)]
    sure = [int(p) / 100 for p in re.findall(r"(\d+)%", html_text)]
    hint = LOW_CONFIDENCE_HINT if "<i>" in html_text else None
    runner_up = (digits[1], sure[1]) if len(digits) > 1 else None
    return Answer(Outcome.DIGIT, digit=digits[0], confidence=sure[0], runner_up=runner_up, hint=hint)


async def test_the_command_menu_is_set_in_every_language(fake, bot):
    await bot.post_init(bot)  # what run_polling / run_webhook call once the bot is initialized
    menus = {c.params.get("language_code"): {m["command"]: m["description"] for m in c.params["commands"]}
             for c in fake.sent("setMyCommands")}
    assert set(menus) == {None, *(lang for lang in LANGUAGES if lang != "en")}
    assert menus[None] == dict(COMMAND_DESCRIPTIONS)
    for lang in LANGUAGES:
        tr = translator(lang)
        expected = {name: tr(description) for name, description in COMMAND_DESCRIPTIONS.items()}
        assert menus[None if lang == "en" else lang] == expected
        if lang != "en":
            assert expected != dict(COMMAND_DESCRIPTIONS)
