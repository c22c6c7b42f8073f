"""Corrections through Discord, end to end: the real discord.py bot against the fake Discord (buttons,
component interactions), a real digits server keeping a real SQLite feedback store."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
import pytest_asyncio

from bots import replies
from bots.core import Recognizer
from bots.discord_bot import (
    DIGIT_DESCRIPTION,
    HELP_DESCRIPTION,
    IMAGE_DESCRIPTION,
    READ_DIGIT_MENU,
    TITLE_SURE,
    DiscordConfig,
    serve,
)
from bots.feedback import Feedback, FeedbackConfig, parse_button_id
from bots.i18n import LANGUAGES, translator
from client import DigitsClient
from testkit.fake_discord import CALLBACK_UPDATE_MESSAGE, EPHEMERAL_FLAG, FakeDiscord
from testkit.photos import phone_photo

pytestmark = pytest.mark.asyncio(loop_scope="module")

LOCALES = {"es": "es-ES", "pt": "pt-BR", "ru": "ru", "de": "de", "fr": "fr", "hi": "hi", "uk": "uk"}
TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0.fake-discord-bot-token.feedback"


@pytest.fixture(scope="module")
def bot_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("dc-bot")
    return FeedbackConfig(enabled=True, secret_file=root / "secret", pending_file=root / "pending.sqlite3")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fake():
    server = await FakeDiscord(TOKEN).start()
    yield server
    await server.stop()


class Bot:
    """The bot as a task; `restart()` is a process restart (new client, new state in memory)."""

    def __init__(self, fake, target: str, files: FeedbackConfig) -> None:
        self.fake, self.target, self.files = fake, target, files
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.client = DigitsClient(self.target, timeout=5.0)
        self.feedback = Feedback(self.client, self.files)
        config = DiscordConfig(TOKEN, api_base=self.fake.api_base, gateway_url=None, message_content=True)
        before = len(self.fake.requests)
        self.task = asyncio.create_task(serve(config, Recognizer(self.client), self.feedback))
        await self.fake.wait_until(lambda: len(self.fake.requests) > before and self.fake.connected, what="login")
        await self.fake.wait_ready()

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await self.client.close()
        await self.feedback.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def bot(fake, store_server, bot_files):
    running = Bot(fake, store_server.target, bot_files)
    await running.start()
    yield running
    await running.stop()


def records(db) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT predicted, correct, source, user FROM feedback").fetchall()


async def answer_with_buttons(fake, digit_samples, user, locale="en-US"):
    attachment = fake.attachment(phone_photo(digit_samples[2][0]))
    token = await fake.invoke_slash("digit", attachment, user=user, locale=locale)
    reply = await fake.final_reply(token, timeout=30)
    assert reply.kind == "followup" and len(reply.custom_ids) == 2, reply.payload
    return reply


async def answer_to(fake, token: str, count: int = 1):
    """The `count`-th thing the bot sent for interaction `token`."""
    return (await fake.wait_until(lambda: fake.replies_to(token)[count - 1:] or None, what="an answer"))[0]


async def test_sender_corrects_a_stranger_may_not(fake, bot, store_server, digit_samples):
    sender, stranger = fake.new_user("sender"), fake.new_user("stranger")
    reply = await answer_with_buttons(fake, digit_samples, sender)
    right_id, wrong_id = reply.custom_ids
    token, choice = parse_button_id(wrong_id)
    assert choice == "no" and parse_button_id(right_id) == (token, "ok")
    before = len(records(store_server.db))

    refused = await answer_to(fake, await fake.click(reply.message, right_id, user=stranger))
    assert refused.content == replies.NOT_YOURS and refused.flags & EPHEMERAL_FLAG
    assert len(records(store_server.db)) == before

    update = await answer_to(fake, await fake.click(reply.message, wrong_id, user=sender))
    assert update.payload["type"] == CALLBACK_UPDATE_MESSAGE
    assert update.custom_ids == [f"fb:{token}:{c}" for c in [*map(str, range(10)), "x"]]

    shown = {**reply.message, "components": update.payload["data"]["components"]}  # the message as edited
    tap = await fake.click(shown, f"fb:{token}:7", user=sender)
    edited = await answer_to(fake, tap)
    assert edited.payload["type"] == CALLBACK_UPDATE_MESSAGE and edited.custom_ids == []
    assert edited.embeds[0]["description"] == "✎ Corrected: 7"
    thanks = await answer_to(fake, tap, 2)
    assert thanks.content == "Thanks! Recorded: it's 7." and thanks.flags & EPHEMERAL_FLAG
    rows = records(store_server.db)
    assert len(rows) == before + 1 and rows[-1][1:3] == (7, "discord")
    assert rows[-1][3].startswith("u-") and sender["id"] not in rows[-1][3]

    again = await answer_to(fake, await fake.click(reply.message, f"fb:{token}:ok", user=sender))  # a stale view
    assert again.content == replies.ALREADY_RECORDED and len(records(store_server.db)) == before + 1


async def test_a_number_is_corrected_by_replying_with_the_right_number(fake, bot, store_server, store_number_photo):
    data, reading = store_number_photo
    read = reading.text.replace(" ", "").replace("\n", "")
    right = str((int(read[0]) + 1) % 10) + read[1:]  # the user says the first digit is another one
    sender, stranger = fake.new_user("sender"), fake.new_user("stranger")
    answer = await fake.final_reply(await fake.invoke_slash("digit", fake.attachment(data), user=sender), timeout=30)
    embed = answer.embeds[0]
    assert f"**{reading.text.split()[0]}" in embed["description"] and not answer.custom_ids
    assert embed["footer"]["text"] == replies.NUMBER_HINT
    before = len(records(store_server.db))

    async def reply(text: str, author: dict, **options) -> str:
        sent = await fake.send_message(text, author=author, reply_to=answer.message, **options)
        return (await fake.final_reply(sent["id"])).content

    assert await reply(right, stranger) == replies.NOT_YOURS  # someone else in the channel may not correct it
    # twice as many digits: no cut of the photo gives them, so the reply cannot be matched
    assert await reply(right + right, sender) == replies.NUMBER_LENGTH.format(count=len(read))
    assert len(records(store_server.db)) == before
    assert await reply(right, sender, mention_bot=True) == f"Thanks! Recorded: {right}."  # "@digits 3026" works too
    edit = await fake.wait_until(lambda: [s for s in fake.sent if s.kind == "edit" and s.target == answer.message["id"]]
                                 or None, what="the answer edited")
    edited = edit[-1].payload["embeds"][0]
    assert edited["description"].endswith(f"\n✎ Corrected: {right}") and "footer" not in edited
    rows = records(store_server.db)[before:]
    assert [(p, c, src) for p, c, src, _ in rows] == [(int(a), int(b), "discord") for a, b in zip(read, right,
                                                                                                  strict=True)]
    assert await reply(read, sender) == replies.ALREADY_RECORDED  # thanked once, recorded once
    assert len(records(store_server.db)) == before + len(read)


async def test_a_number_read_with_a_digit_missing_is_corrected_piece_by_piece(fake, bot, store_server,
                                                                             miscounted_number_photo):
    """A touching pair read as one digit ("311" read "51"): the reply with the right number makes the bot
    download the photo again (its attachment URL) and have it cut into those digits (Read with `expected`),
    so each digit is recorded with its own piece of the photo; without that the reply could not be matched."""
    data, text, reading = miscounted_number_photo
    sender = fake.new_user("miscounted")
    answer = await fake.final_reply(await fake.invoke_slash("digit", fake.attachment(data), user=sender), timeout=30)
    assert answer.embeds[0]["footer"]["text"] == replies.NUMBER_HINT
    before = len(records(store_server.db))
    sent = await fake.send_message(text, author=sender, reply_to=answer.message)
    thanks = (await fake.final_reply(sent["id"], timeout=30)).content
    assert thanks == f"Thanks! Recorded: {text}.", (reading.text, thanks)
    with sqlite3.connect(store_server.db) as conn:
        rows = conn.execute("SELECT pixels, correct, source FROM feedback").fetchall()[before:]
    assert [(c, src) for _, c, src in rows] == [(int(d), "discord") for d in text]
    assert len({px for px, _, _ in rows}) == len(text) and all(len(px) == 784 for px, _, _ in rows)


async def test_buttons_survive_a_restart_and_forget(fake, bot, store_server, digit_samples):
    user = fake.new_user("restarts")
    reply = await answer_with_buttons(fake, digit_samples, user, locale="es-ES")
    assert reply.embeds[0]["title"].startswith("Es un ")  # the interaction's locale
    await bot.stop()
    await bot.start()  # a new process: no view in memory, only the custom id on the button
    right_id = reply.custom_ids[0]
    tap = await fake.click(reply.message, right_id, user=user, locale="es-ES")
    edited = await answer_to(fake, tap)
    assert edited.embeds[0]["description"].startswith("✓ ")
    thanks = await answer_to(fake, tap, 2)
    assert thanks.content.startswith(translator("es")(replies.RECORDED_DIGIT).split("{digit}")[0])

    forget = await fake.invoke_slash("forget", user=user, locale="uk")
    done = await fake.final_reply(forget)
    assert done.content == translator("uk")(replies.FORGOTTEN).format(count=1)
    assert not [r for r in records(store_server.db) if r[3] == bot.feedback.user("discord", user["id"])]


async def test_help_says_what_is_kept(fake, bot):
    token = await fake.invoke_slash("help", locale="pt-BR")
    reply = await fake.final_reply(token)
    tr = translator("pt")
    assert reply.content == tr(replies.HELP_TEXT) + "\n\n" + tr(replies.PRIVACY_TEXT)
    assert reply.flags & EPHEMERAL_FLAG


async def test_commands_are_localized_in_every_catalog(fake, bot):
    commands = {c["name"]: c for scope in fake.synced_commands.values() for c in scope}
    for lang in LANGUAGES:
        if lang == "en":
            continue
        tr = translator(lang)
        locale = LOCALES[lang]
        assert commands["digit"]["description_localizations"][locale] == tr(DIGIT_DESCRIPTION)
        assert commands["digit"]["options"][0]["description_localizations"][locale] == tr(IMAGE_DESCRIPTION)
        assert commands["help"]["description_localizations"][locale] == tr(HELP_DESCRIPTION)
        assert commands["Read digit"]["name_localizations"][locale] == tr(READ_DIGIT_MENU)
    assert commands["digit"]["description"] == DIGIT_DESCRIPTION  # English stays the default


async def test_a_dm_is_answered_in_the_language_the_user_last_interacted_in(fake, bot, digit_samples):
    user = fake.new_user("speaks-german")
    photo = fake.attachment(phone_photo(digit_samples[2][0]))
    before = await fake.send_message("", [photo], dm=True, author=user)
    assert (await fake.final_reply(before["id"], timeout=30)).embeds[0]["title"].startswith("It's ")  # no signal yet
    await fake.final_reply(await fake.invoke_slash("help", user=user, locale="de"))
    after = await fake.send_message("", [fake.attachment(phone_photo(digit_samples[2][0]))], dm=True, author=user)
    reply = await fake.final_reply(after["id"], timeout=30)
    assert reply.embeds[0]["title"].startswith(translator("de")(TITLE_SURE).split("{digit}")[0])
    assert [c["label"] for row in reply.components for c in row["components"]] == [
        "✓ " + translator("de")(replies.RIGHT_BUTTON), "✗ " + translator("de")(replies.WRONG_BUTTON)]
    hello = await fake.send_message("hallo", dm=True, author=user)
    assert (await fake.final_reply(hello["id"])).content == translator("de")(replies.HELP_TEXT)


async def test_a_mention_from_an_unknown_user_is_answered_in_the_guilds_locale(fake, bot, digit_samples):
    await fake.set_guild_locale("fr")
    try:
        user = fake.new_user("never-interacted")
        sent = await fake.send_message("", [fake.attachment(phone_photo(digit_samples[2][0]))], mention_bot=True,
                                       author=user)
        reply = await fake.final_reply(sent["id"], timeout=30)
        assert reply.embeds[0]["title"].startswith(translator("fr")(TITLE_SURE).split("{digit}")[0])
    finally:
        await fake.set_guild_locale("en-US")
