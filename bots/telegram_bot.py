"""digits-telegram: the Telegram adapter over bots.core (platform I/O only; all decisions live in the core).

Long polling by default; `--webhook-url` switches to webhook mode for production. Configuration
comes from the environment (a `.env` file is read if present): TELEGRAM_BOT_TOKEN, DIGITS_SERVER,
TELEGRAM_API_URL (Bot API root, e.g. a self-hosted server), TELEGRAM_WEBHOOK_SECRET.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatAction, ChatType, MessageEntityType, ParseMode
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bots import replies
from bots.answer import Answer, Outcome
from bots.chatstate import ChatState
from bots.config import (
    EXIT_CONFIG,
    ConfigError,
    CoreConfig,
    OneLineParser,
    configure_logging,
    core_config_from_env,
    env_log_level,
    env_url,
    fail,
    load_env,
    log_level,
    parse_url,
    port,
)
from bots.core import Attachment, DownloadFailed, FileTooLarge, Recognizer, make_chat_state, make_recognizer
from bots.feedback import (
    CHOICE_NOT_DIGIT,
    CHOICE_RIGHT,
    CHOICE_WRONG,
    NUMBER_REPLY,
    PENDING_TTL,
    Feedback,
    FeedbackConfig,
    Fetch,
    Result,
    button_id,
    feedback_config_from_env,
    join_tokens,
    number_key,
    number_photo_key,
    parse_button_id,
    split_tokens,
)
from bots.i18n import LANGUAGES, N_, Translate, english, translator
from bots.redact import protect_secrets
from bots.replies import NOT_STILL_TEXT, digit_text, plain_text

log = logging.getLogger("bots.telegram")

PROG = "digits-telegram"
DEFAULT_API_URL = "https://api.telegram.org"
RECOGNIZER_KEY = "recognizer"
FEEDBACK_KEY = "feedback"
STATE_KEY = "chat_state"  # shared across webhook replicas through Redis when DIGITS_REDIS_URL is set
SEEN_KEY = "seen"
FLOOD_NOTICE_KEY = "flood-notice"
FLOOD_NOTICE_EVERY = 10.0  # seconds: one polite notice per flood, not one per flooded message
STATIC_STICKERS_ONLY = NOT_STILL_TEXT
DOWNLOAD_FAILED = N_("I couldn't download that file from Telegram. Please try sending it again.")
WORDING = {Outcome.DOWNLOAD_FAILED: DOWNLOAD_FAILED}
HANDLER_FAILED = N_("Sorry, something went wrong on my side. Please try again.")
TOKEN_PATTERN = re.compile(r"\d+:[A-Za-z0-9_-]+")
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
URL_PATH_PATTERN = re.compile(r"[A-Za-z0-9_./~-]*")
SEEN_ON_TEXT = N_(
    "Okay: with each answer I'll also send a picture of what I read: your photo with each digit boxed and labelled "
    "(for a single digit, the 28x28 image the model saw). Send /seen again to stop."
)
SEEN_OFF_TEXT = N_("Okay: I'll stop sending those pictures. Send /seen to turn them back on.")
SEEN_CAPTION = N_("What I read: the 28x28 image the model saw, enlarged.")
NUMBER_SEEN_CAPTION = N_("What I read: a box around each digit I found, labelled with what I read.")
SEEN_HELP_TEXT = N_(
    "Send /seen to also get a picture of what I read (each digit of a number boxed and labelled; a single digit as "
    "the 28x28 image the model saw), to understand mistakes."
)
TEXT_ONLY_TEXT = N_("Send me a photo of a handwritten digit or number. /help has tips.")
COMMAND_DESCRIPTIONS = {  # the command menu, set once per language (Telegram shows the one for the user's app language)
    "start": N_("What this bot does"),
    "help": N_("How to get a good result"),
    "seen": N_("Toggle: also send a picture of what I read"),
    "forget": N_("Delete the corrections kept for you"),
}


def bot_commands(tr: Translate) -> list[BotCommand]:
    """The command menu in one language."""
    return [BotCommand(name, tr(description)) for name, description in COMMAND_DESCRIPTIONS.items()]


COMMANDS = bot_commands(english)


@dataclass(frozen=True)
class TelegramConfig:
    """Telegram-side settings; the shared ones (server, limits) are in bots.config.CoreConfig."""

    token: str
    api_url: str = DEFAULT_API_URL
    webhook_secret: str | None = None

    def __repr__(self) -> str:  # never let a secret reach a log line via repr()
        secret = "***" if self.webhook_secret else None
        return f"TelegramConfig(api_url={self.api_url!r}, token=***, webhook_secret={secret})"


def telegram_config_from_env(env: Mapping[str, str] | None = None) -> TelegramConfig:
    """TELEGRAM_* settings, validated (a `.env` in the working directory is read first; env vars win)."""
    if env is None:
        load_env()
        env = os.environ
    token = (env.get("TELEGRAM_BOT_TOKEN") or "").strip()
    if not token:
        raise ConfigError("TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather, then export "
                          "TELEGRAM_BOT_TOKEN=... (or put it in a .env file)")
    if not TOKEN_PATTERN.fullmatch(token):
        raise ConfigError("TELEGRAM_BOT_TOKEN must look like 123456:ABC-def_123 (digits, a colon, then letters, "
                          "digits, _ or -), as @BotFather gives it")
    secret = (env.get("TELEGRAM_WEBHOOK_SECRET") or "").strip() or None
    if secret is not None and not SECRET_PATTERN.fullmatch(secret):
        raise ConfigError("TELEGRAM_WEBHOOK_SECRET must be 1-256 characters from A-Z, a-z, 0-9, _ and -")
    api_url = env_url(env, "TELEGRAM_API_URL", DEFAULT_API_URL, ("https", "http"))
    return TelegramConfig(token=token, api_url=api_url or DEFAULT_API_URL, webhook_secret=secret)


def pick_attachment(message: Message) -> tuple[str, Attachment] | None:
    """The file to read in a message (largest photo size, image document, sticker) and what Telegram says of it."""
    if message.photo:
        best = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return best.file_id, Attachment(best.file_size, "image/jpeg")
    if message.document:
        doc = message.document
        return doc.file_id, Attachment(doc.file_size, doc.mime_type, doc.file_name)
    if message.sticker:
        sticker = message.sticker
        still = not (sticker.is_animated or sticker.is_video)
        return sticker.file_id, Attachment(sticker.file_size, "image/webp", still=still)
    return None


def addressed_to_bot(message: Message, bot_id: int, bot_username: str | None) -> bool:
    """Private chats: always. Groups: only when the caption mentions the bot or the message replies to it."""
    if message.chat.type == ChatType.PRIVATE:
        return True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot_id:
        return True
    mention = f"@{bot_username}".lower() if bot_username else None
    for entity, text in message.parse_caption_entities().items():
        if entity.type == MessageEntityType.MENTION and mention and text.lower() == mention:
            return True
        if entity.type == MessageEntityType.TEXT_MENTION and entity.user and entity.user.id == bot_id:
            return True
    return False


def format_html(answer: Answer, tr: Translate | None = None) -> str:
    """Telegram-flavoured reply: replies.digit_text's wording with the digits in bold and the hint in italics;
    other outcomes as (escaped) plain text."""
    tr = tr or translator(None)
    if answer.outcome == Outcome.NUMBER:
        return replies.number_text(answer, tr, replies.HTML)
    if answer.outcome != Outcome.DIGIT or answer.digit is None or answer.confidence is None:
        return replies.HTML.escape(plain_text(answer, WORDING, tr))
    return digit_text(answer, tr, replies.HTML)


def feedback_keyboard(token: str, tr: Translate) -> InlineKeyboardMarkup:
    """Right / Wrong under an answer."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton("✓ " + tr(replies.RIGHT_BUTTON), callback_data=button_id(token, CHOICE_RIGHT)),
        InlineKeyboardButton("✗ " + tr(replies.WRONG_BUTTON), callback_data=button_id(token, CHOICE_WRONG)),
    ]])


def digits_keyboard(token: str, tr: Translate) -> InlineKeyboardMarkup:
    """After "wrong": the ten digits and "not a digit"."""
    rows = [[InlineKeyboardButton(str(d), callback_data=button_id(token, str(d))) for d in range(r, r + 5)]
            for r in (0, 5)]
    not_digit = InlineKeyboardButton(tr(replies.NOT_A_DIGIT_BUTTON), callback_data=button_id(token, CHOICE_NOT_DIGIT))
    rows.append([not_digit])
    return InlineKeyboardMarkup(rows)


async def send_answer(message: Message, answer: Answer, *, with_seen: bool = False, tr: Translate | None = None,
                      markup: InlineKeyboardMarkup | None = None, footer: str | None = None) -> Message:
    """Reply quoting the user's message (with the right/wrong buttons when given, and a last plain line
    `footer`); optionally follow with the image the model saw (a digit), or the photo with each digit boxed
    (a number). Returns the answer message."""
    text = format_html(answer, tr) + (f"\n{html.escape(footer, quote=False)}" if footer else "")
    sent = await message.reply_text(text, parse_mode=ParseMode.HTML, do_quote=True, reply_markup=markup)
    if with_seen and answer.seen_png:
        caption = NUMBER_SEEN_CAPTION if answer.outcome == Outcome.NUMBER else SEEN_CAPTION
        await message.reply_photo(answer.seen_png, caption=(tr or english)(caption), do_quote=True)
    return sent


async def _settle(task: asyncio.Task, timeout: float = 1.0) -> None:
    """Let the typing indicator land before the reply (else it would linger after the answer), but never
    wait long for it or fail because of it: it is cosmetic."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
    elif not task.cancelled() and task.exception() is not None:
        log.debug("sendChatAction failed: %r", task.exception())


# -- handlers -------------------------------------------------------------------------------------
def user_translator(update: Update) -> Translate:
    user = update.effective_user
    return translator(user.language_code if user else None)


async def on_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start and /help: what to send and how to get a good result, and what is kept when you correct."""
    if update.effective_message:
        tr = user_translator(update)
        extra = "\n\n" + tr(SEEN_HELP_TEXT)
        feedback: Feedback | None = context.bot_data.get(FEEDBACK_KEY)
        privacy = "\n\n" + tr(replies.PRIVACY_TEXT) if feedback is not None and feedback.enabled else ""
        await update.effective_message.reply_text(tr(Recognizer.HELP_TEXT) + extra + privacy)


async def on_forget(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/forget: delete every correction kept for this user, and say how many went."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    tr = user_translator(update)
    feedback: Feedback | None = context.bot_data.get(FEEDBACK_KEY)
    if feedback is None or not feedback.enabled:
        await message.reply_text(tr(replies.FEEDBACK_OFF))
        return
    deleted = await feedback.forget("telegram", user.id)
    text = tr(replies.FORGET_FAILED) if deleted is None else tr(replies.FORGOTTEN).format(count=deleted)
    await message.reply_text(text)


def feedback_token(message: Message | None) -> str | None:
    """The correction token of one of our answers (from its right/wrong buttons), if it still has them."""
    markup = message.reply_markup if message is not None else None
    for row in markup.inline_keyboard if markup is not None else ():
        for button in row:
            parsed = parse_button_id(button.callback_data if isinstance(button.callback_data, str) else "")
            if parsed is not None:
                return parsed[0]
    return None


# What a correction by reply that recorded nothing is answered (the same for a digit and a number).
_NOT_RECORDED = {
    Result.NOT_YOURS: replies.NOT_YOURS,
    Result.ALREADY: replies.ALREADY_RECORDED,
    Result.FAILED: replies.FEEDBACK_FAILED,
}  # anything else: the answer is too old to correct (replies.EXPIRED)


async def on_number_reply(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A reply of digits to one of our answers: to a digit answer with buttons, one digit is the same as
    tapping "wrong", then that digit; to a number answer, the right number corrects every digit read."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or message.text is None:
        return
    feedback: Feedback | None = context.bot_data.get(FEEDBACK_KEY)
    answer_message = message.reply_to_message
    token = feedback_token(answer_message)
    if feedback is not None and token is None and answer_message is not None:
        state: ChatState = context.bot_data[STATE_KEY]
        tokens = split_tokens(await state.get_text(number_key("telegram", message.chat_id, answer_message.message_id)))
        if tokens:
            file_id = await state.get_text(number_photo_key("telegram", message.chat_id, answer_message.message_id))
            fetch = (lambda: download_file(context.bot, file_id)) if file_id else None
            await correct_number(message, user.language_code, feedback, user.id, tokens, fetch)
            return
    if token is None or feedback is None or not message.text.strip().isdigit() or len(message.text.strip()) != 1:
        if message.chat.type == ChatType.PRIVATE:
            await on_text(update, context)
        return
    tr = translator(user.language_code)
    outcome = await feedback.choose("telegram", user.id, token, message.text.strip())
    if outcome.result == Result.RECORDED:
        answer_message = message.reply_to_message
        line = replies.correction_line(outcome.label, outcome.predicted, tr)
        try:
            await answer_message.edit_text(html.escape(f"{answer_message.text or ''}\n{line}".strip(), quote=False),
                                           parse_mode=ParseMode.HTML, reply_markup=None)
        except TelegramError as exc:  # cosmetic: the correction is stored either way
            log.debug("could not edit the corrected answer: %r", exc)
        await message.reply_text(replies.recorded_text(outcome.label, tr), do_quote=True)
    else:
        await message.reply_text(tr(_NOT_RECORDED.get(outcome.result, replies.EXPIRED)), do_quote=True)


async def correct_number(message: Message, language_code: str | None, feedback: Feedback, user_id: int,
                         tokens: list[str], fetch: Fetch | None = None) -> None:
    """The reply `message` gives the right number for the number answer it replies to (whose digits wait
    under `tokens`; `fetch` downloads the answered photo again, to cut it into those digits): recorded digit
    by digit if it comes from the sender; the answer is edited to show it and the user thanked, once."""
    tr = translator(language_code)
    outcome = await feedback.correct_number("telegram", user_id, tokens, message.text or "", fetch)
    if outcome.result == Result.RECORDED:
        answer_message = message.reply_to_message
        if answer_message is not None:
            lines = (answer_message.text_html or "").split("\n")  # the number stays in bold
            if lines[-1] == html.escape(tr(replies.NUMBER_HINT), quote=False):  # the invitation has been taken up
                lines.pop()
            lines.append(html.escape(replies.number_correction_line(outcome.read, outcome.corrected, tr), quote=False))
            try:
                await answer_message.edit_text("\n".join(lines).strip(), parse_mode=ParseMode.HTML)
            except TelegramError as exc:  # cosmetic: the correction is stored either way
                log.debug("could not edit the corrected answer: %r", exc)
        await message.reply_text(tr(replies.RECORDED_NUMBER).format(number=outcome.corrected), do_quote=True)
    elif outcome.result == Result.WRONG_LENGTH:
        await message.reply_text(tr(replies.NUMBER_LENGTH).format(count=len(tokens)), do_quote=True)
    else:
        await message.reply_text(tr(_NOT_RECORDED.get(outcome.result, replies.EXPIRED)), do_quote=True)


async def on_feedback_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A tap on right / wrong / a digit / "not a digit" under an answer."""
    query = update.callback_query
    if query is None:
        return
    tr = translator(query.from_user.language_code)
    feedback: Feedback | None = context.bot_data.get(FEEDBACK_KEY)
    parsed = parse_button_id(query.data or "")
    if feedback is None or parsed is None:
        await query.answer(tr(replies.EXPIRED))
        return
    token, choice = parsed
    outcome = await feedback.choose("telegram", query.from_user.id, token, choice)
    if outcome.result == Result.NOT_YOURS:
        await query.answer(tr(replies.NOT_YOURS), show_alert=True)
    elif outcome.result == Result.ASK_DIGIT:
        await query.answer(tr(replies.WHICH_DIGIT))
        await query.edit_message_reply_markup(digits_keyboard(token, tr))
    elif outcome.result == Result.RECORDED:
        await query.answer(replies.recorded_text(outcome.label, tr))
        original = query.message.text if query.message is not None and query.message.text else ""
        line = replies.correction_line(outcome.label, outcome.predicted, tr)
        await query.edit_message_text(html.escape(f"{original}\n{line}".strip(), quote=False),
                                      parse_mode=ParseMode.HTML, reply_markup=None)
    elif outcome.result == Result.ALREADY:
        await query.answer(tr(replies.ALREADY_RECORDED))
    elif outcome.result == Result.FAILED:
        await query.answer(tr(replies.FEEDBACK_FAILED), show_alert=True)
    else:  # expired, or feedback turned off since
        await query.answer(tr(replies.EXPIRED))
        await query.edit_message_reply_markup(None)


async def on_seen(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/seen toggles (or `/seen on|off` sets) sending the model's-eye image for this chat."""
    message = update.effective_message
    if message is None:
        return
    state: ChatState = context.bot_data[STATE_KEY]
    key = f"{SEEN_KEY}:telegram:{message.chat_id}"
    arg = (context.args or [""])[0].lower()
    enabled = {"on": True, "off": False}.get(arg)
    if enabled is None:
        enabled = not await state.get_flag(key)
    await state.set_flag(key, enabled)
    await message.reply_text(user_translator(update)(SEEN_ON_TEXT if enabled else SEEN_OFF_TEXT))


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Plain text in a private chat: point at what the bot understands."""
    if update.effective_message:
        await update.effective_message.reply_text(user_translator(update)(TEXT_ONLY_TEXT))


async def download_file(bot, file_id: str) -> bytes:
    """A file of a message, by its Telegram file id (the photo read, or read again for a correction)."""
    try:
        file = await bot.get_file(file_id)
        return bytes(await file.download_as_bytearray())
    except BadRequest as exc:  # Telegram refuses files over 20 MB to bots, and forgets old ones
        if "too big" in str(exc).lower():
            raise FileTooLarge(str(exc)) from exc
        raise DownloadFailed(f"getFile refused: {exc}") from exc
    except NetworkError as exc:
        raise DownloadFailed(repr(exc)) from exc


async def on_image(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """An image-bearing message addressed to the bot: the core's flow, with Telegram's download and typing."""
    message = update.effective_message
    if message is None:
        return
    if not addressed_to_bot(message, context.bot.id, context.bot.username):
        return
    picked = pick_attachment(message)
    if picked is None:
        return
    file_id, attachment = picked
    recognizer: Recognizer = context.bot_data[RECOGNIZER_KEY]
    typing: list[asyncio.Task] = []

    async def show_typing() -> None:
        typing.append(asyncio.create_task(context.bot.send_chat_action(message.chat_id, ChatAction.TYPING)))

    async def download() -> bytes:
        return await download_file(context.bot, file_id)

    user = message.from_user
    tr = translator(user.language_code if user else None)
    key = f"telegram:{user.id if user else message.chat_id}"
    answer = await recognizer.handle(key, attachment, download, on_accepted=show_typing)
    for task in typing:
        await _settle(task)
    state: ChatState = context.bot_data[STATE_KEY]
    if answer.outcome == Outcome.RATE_LIMITED:
        # One notice per flood (per FLOOD_NOTICE_EVERY seconds, across replicas): replying to every message
        # would be a flood too.
        if await state.first_in(f"{FLOOD_NOTICE_KEY}:{key}", FLOOD_NOTICE_EVERY):
            await send_answer(message, answer, tr=tr)
        return
    with_seen = answer.seen_png is not None and await state.get_flag(f"{SEEN_KEY}:telegram:{message.chat_id}")
    markup, tokens = None, []
    feedback: Feedback | None = context.bot_data.get(FEEDBACK_KEY)
    if feedback is not None and user is not None and answer.outcome == Outcome.DIGIT:
        token = await feedback.offer("telegram", user.id, answer.pixels, answer.digit, answer.model_version)
        markup = feedback_keyboard(token, tr) if token else None
    elif feedback is not None and user is not None and answer.outcome == Outcome.NUMBER:
        tokens = await feedback.offer_number("telegram", user.id, list(answer.digit_pixels), answer.model_version)
    footer = tr(replies.NUMBER_HINT) if tokens else None
    sent = await send_answer(message, answer, with_seen=with_seen, tr=tr, markup=markup, footer=footer)
    if tokens:  # a reply to `sent` with the right number finds the digits' tokens (and the photo's id) under its id
        await state.set_text(number_key("telegram", message.chat_id, sent.message_id), join_tokens(tokens),
                             PENDING_TTL)
        await state.set_text(number_photo_key("telegram", message.chat_id, sent.message_id), file_id, PENDING_TTL)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any handler failure is logged and answered; it never stops the bot."""
    log.error("handler failed: %r", context.error, exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        try:
            await update.effective_message.reply_text(user_translator(update)(HANDLER_FAILED))
        except TelegramError as exc:
            log.warning("could not report the failure to the chat: %r", exc)


# -- application ----------------------------------------------------------------------------------
IMAGE_FILTER = filters.PHOTO | filters.Document.ALL | filters.Sticker.ALL


class FloodControl(AIORateLimiter):
    """PTB's AIORateLimiter for messages; chat actions ("typing...") pass unthrottled.

    Why: Telegram's limits are on messages, and a typing indicator is cosmetic (we wait at most 1 s
    for it). Throttled, it would spend half of the 30/s budget and delay the answers behind it."""

    __slots__ = ()

    async def process_request(self, callback, args, kwargs, endpoint, data, rate_limit_args):
        if endpoint == "sendChatAction":
            return await callback(*args, **kwargs)
        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)


def flood_control(*, max_retries: int = 2) -> AIORateLimiter:
    """Outgoing flood control at Telegram's published limits (30 messages/s overall, 20/min per group),
    so a busy group is answered a little later instead of earning a RetryAfter; should one come anyway
    (another replica sent to the same group), the request waits as told and is retried."""
    return FloodControl(overall_max_rate=30, overall_time_period=1, group_max_rate=20, group_time_period=60,
                        max_retries=max_retries)


async def set_commands(app: Application) -> None:
    """The command menu: English as the default, then one list per language, which Telegram shows to users
    whose app is in that language. Cosmetic: the bot works without it, so a failure is only logged."""
    try:
        await app.bot.set_my_commands(COMMANDS)
        for lang in LANGUAGES:
            if lang != "en":
                await app.bot.set_my_commands(bot_commands(translator(lang)), language_code=lang)
    except TelegramError as exc:
        log.warning("setMyCommands failed: %r", exc)


def build_application(
    token: str, *, api_url: str = DEFAULT_API_URL, config: CoreConfig | None = None,
    rate_limiter: AIORateLimiter | None | bool = True, feedback: FeedbackConfig | None = None,
) -> Application:
    """The PTB Application with every handler; the gRPC client is opened and closed with it.

    `rate_limiter`: True for `flood_control()`, an AIORateLimiter of your own, or None/False for none.
    `feedback`: the right/wrong buttons' settings (main() reads them from the environment); None: off."""
    config = config or CoreConfig()
    root = api_url.rstrip("/")

    async def post_init(app: Application) -> None:
        await set_commands(app)
        log.info("telegram bot @%s ready; digits server %s", app.bot.username, config.digits_server)

    async def post_shutdown(app: Application) -> None:
        recognizer = app.bot_data.get(RECOGNIZER_KEY)
        if recognizer is not None:
            await recognizer.close()
        if app.bot_data.get(FEEDBACK_KEY) is not None:
            await app.bot_data[FEEDBACK_KEY].aclose()
        state = app.bot_data.get(STATE_KEY)
        if state is not None:
            await state.close()

    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .concurrent_updates(True)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
    )
    if rate_limiter is True:
        rate_limiter = flood_control()
    if rate_limiter:
        builder = builder.rate_limiter(rate_limiter)
    app = builder.build()
    # The client opens its channel lazily on first use, so it can be built before the loop runs.
    recognizer = app.bot_data[RECOGNIZER_KEY] = make_recognizer(config)
    app.bot_data[FEEDBACK_KEY] = Feedback(recognizer.client, feedback or FeedbackConfig(enabled=False),
                                          redis_url=config.redis_url)
    app.bot_data[STATE_KEY] = make_chat_state(config)
    app.add_handler(CommandHandler(["start", "help"], on_help))
    app.add_handler(CommandHandler("seen", on_seen))
    app.add_handler(CommandHandler("forget", on_forget))
    app.add_handler(CallbackQueryHandler(on_feedback_button, pattern=r"^fb:"))
    app.add_handler(MessageHandler(IMAGE_FILTER, on_image))
    app.add_handler(MessageHandler(filters.REPLY & filters.Regex("^" + NUMBER_REPLY.pattern + "$"), on_number_reply))
    app.add_handler(MessageHandler(filters.ChatType.PRIVATE & filters.TEXT & ~filters.COMMAND, on_text))
    app.add_error_handler(on_error)
    return app


class _NoTracebackForBadToken(logging.Filter):
    """PTB logs a rejected token with a full traceback; main() already prints a one-line explanation."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], InvalidToken):
            record.exc_info, record.exc_text = None, None
        return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog=PROG,
        description="Telegram bot that reads handwritten digits from photos (via the digits gRPC server).",
        epilog="Environment (.env is read if present): TELEGRAM_BOT_TOKEN (required), DIGITS_SERVER "
        "(default 127.0.0.1:50051), TELEGRAM_API_URL (default https://api.telegram.org), "
        "TELEGRAM_WEBHOOK_SECRET (webhook mode), DIGITS_API_TOKEN, DIGITS_RATE_LIMIT, DIGITS_RATE_WINDOW, "
        "DIGITS_MAX_BYTES, DIGITS_LOW_CONFIDENCE, DIGITS_TIMEOUT, DIGITS_REDIS_URL, LOG_LEVEL. "
        "A bad setting exits with code 2 and one line naming it.",
    )
    parser.add_argument("--webhook-url", help="public HTTPS URL Telegram should POST updates to (enables webhook mode)")
    parser.add_argument("--listen", default="0.0.0.0", help="webhook mode: address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=port, default=8443, help="webhook mode: port to listen on (default 8443)")
    parser.add_argument("--url-path", default="telegram", help="webhook mode: local path (default 'telegram')")
    parser.add_argument("--log-level", type=log_level, default=None,
                        help="logging level (default LOG_LEVEL, else INFO)")
    return parser.parse_args(argv)


def check_webhook_args(args: argparse.Namespace, config: TelegramConfig) -> None:
    """The webhook flags, validated like the environment (Telegram itself accepts only HTTPS webhooks;
    a self-hosted Bot API server, TELEGRAM_API_URL, also takes http://)."""
    if args.webhook_url is None:
        return
    schemes = ("https",) if config.api_url == DEFAULT_API_URL else ("https", "http")
    parse_url(args.webhook_url, "--webhook-url", schemes)
    if not args.listen.strip() or any(c.isspace() for c in args.listen):
        raise ConfigError(f"--listen must be an address such as 0.0.0.0 or 127.0.0.1, got {args.listen!r}")
    if not URL_PATH_PATTERN.fullmatch(args.url_path):
        raise ConfigError(f"--url-path must be a URL path of letters, digits and _ . / ~ -, got {args.url_path!r}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of digits-telegram; returns the exit code (2: configuration error)."""
    args = parse_args(argv)
    load_env()
    try:
        level = args.log_level or env_log_level()
        tg = telegram_config_from_env()
        core = core_config_from_env()
        feedback = feedback_config_from_env()
        check_webhook_args(args, tg)
    except ConfigError as exc:
        return fail(PROG, exc)
    configure_logging(level)
    redactor = protect_secrets(tg.token, tg.webhook_secret, core.api_token, core.redis_url)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoTracebackForBadToken())
    app = build_application(tg.token, api_url=tg.api_url, config=core, feedback=feedback)
    try:
        if args.webhook_url:
            app.run_webhook(
                listen=args.listen,
                port=args.port,
                url_path=args.url_path,
                webhook_url=args.webhook_url,
                secret_token=tg.webhook_secret,
                bootstrap_retries=-1,
            )
        else:
            app.run_polling(bootstrap_retries=-1)
    except InvalidToken:
        print(f"{PROG}: error: Telegram rejected TELEGRAM_BOT_TOKEN; check it with @BotFather.", file=sys.stderr)
        return EXIT_CONFIG
    except (NetworkError, OSError) as exc:
        print(f"{PROG}: cannot reach the Telegram Bot API at {tg.api_url}: {redactor.redact(str(exc))}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
