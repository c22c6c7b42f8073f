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
import sys
import time
from dataclasses import dataclass

from telegram import BotCommand, Message, Update
from telegram.constants import ChatAction, ChatType, MessageEntityType, ParseMode
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import Application, ApplicationBuilder, CommandHandler, ContextTypes, MessageHandler, filters

from bots.core import (
    Answer,
    CoreConfig,
    Outcome,
    Recognizer,
    config_from_env,
    load_env,
    make_recognizer,
    protect_secrets,
)

log = logging.getLogger("bots.telegram")

DEFAULT_API_URL = "https://api.telegram.org"
RECOGNIZER_KEY = "recognizer"
SEEN_KEY = "send_seen"
FLOOD_NOTICE_KEY = "flood_notice_at"
FLOOD_NOTICE_EVERY = 10.0  # seconds: one polite notice per flood, not one per flooded message
STATIC_STICKERS_ONLY = "I can only read still images: please send a photo or a static sticker."
DOWNLOAD_FAILED = "I couldn't download that file from Telegram. Please try sending it again."
HANDLER_FAILED = "Sorry, something went wrong on my side. Please try again."
COMMANDS = [
    BotCommand("start", "What this bot does"),
    BotCommand("help", "How to get a good result"),
    BotCommand("seen", "Toggle: also send the 28x28 image the model saw"),
]


@dataclass(frozen=True)
class Attachment:
    """The one file we would download for a message, with the metadata Telegram reports."""

    file_id: str
    size: int | None
    mime_type: str | None
    filename: str | None


def pick_attachment(message: Message) -> Attachment | Answer | None:
    """The image in a message (largest photo size, image document, static sticker), or why it can't be read."""
    if message.photo:
        best = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return Attachment(best.file_id, best.file_size, "image/jpeg", None)
    if message.document:
        doc = message.document
        return Attachment(doc.file_id, doc.file_size, doc.mime_type, doc.file_name)
    if message.sticker:
        sticker = message.sticker
        if sticker.is_animated or sticker.is_video:
            return Answer(Outcome.NOT_IMAGE, STATIC_STICKERS_ONLY)
        return Attachment(sticker.file_id, sticker.file_size, "image/webp", None)
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


def format_html(answer: Answer) -> str:
    """Telegram-flavoured reply: the digit in bold, the hint in italics; other outcomes as plain text."""
    if answer.outcome != Outcome.DIGIT or answer.digit is None or answer.confidence is None:
        return html.escape(answer.text, quote=False)
    if answer.runner_up is None:
        return f"It's a <b>{answer.digit}</b> ({answer.confidence:.0%} sure)."
    other, other_conf = answer.runner_up
    hint = html.escape(answer.text.splitlines()[-1], quote=False)
    return (
        f"I think it's a <b>{answer.digit}</b> ({answer.confidence:.0%} sure), "
        f"but it could be a <b>{other}</b> ({other_conf:.0%}).\n<i>{hint}</i>"
    )


async def send_answer(message: Message, answer: Answer, *, with_seen: bool = False) -> None:
    """Reply quoting the user's message; optionally follow with the image the model saw."""
    await message.reply_text(format_html(answer), parse_mode=ParseMode.HTML, do_quote=True)
    if with_seen and answer.seen_png:
        await message.reply_photo(
            answer.seen_png, caption="What I read: the 28x28 image the model saw, enlarged.", do_quote=True
        )


async def _settle(task: asyncio.Task, timeout: float = 1.0) -> None:
    """Let the typing indicator land before the reply (else it would linger after the answer), but never
    wait long for it or fail because of it: it is cosmetic."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
    elif not task.cancelled() and task.exception() is not None:
        log.debug("sendChatAction failed: %r", task.exception())


# -- handlers -------------------------------------------------------------------------------------
async def on_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start and /help: what to send and how to get a good result."""
    if update.effective_message:
        extra = "\n\nSend /seen to also get the 28x28 image the model read, to understand mistakes."
        await update.effective_message.reply_text(Recognizer.HELP_TEXT + extra)


async def on_seen(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/seen toggles (or `/seen on|off` sets) sending the model's-eye image for this chat."""
    message = update.effective_message
    if message is None or context.chat_data is None:
        return
    arg = (context.args or [""])[0].lower()
    enabled = {"on": True, "off": False}.get(arg, not context.chat_data.get(SEEN_KEY, False))
    context.chat_data[SEEN_KEY] = enabled
    if enabled:
        text = "Okay: with each answer I'll also send the 28x28 image the model saw. Send /seen again to stop."
    else:
        text = "Okay: I'll stop sending the 28x28 image. Send /seen to turn it back on."
    await message.reply_text(text)


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Plain text in a private chat: point at what the bot understands."""
    if update.effective_message:
        await update.effective_message.reply_text("Send me a photo of a handwritten digit. /help has tips.")


async def on_image(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """An image-bearing message: checks (addressing, rate limit, size/type), download, recognize, reply."""
    message = update.effective_message
    if message is None:
        return
    if not addressed_to_bot(message, context.bot.id, context.bot.username):
        return
    recognizer: Recognizer = context.bot_data[RECOGNIZER_KEY]
    picked = pick_attachment(message)
    if picked is None:
        return
    user = message.from_user
    limited = recognizer.rate_limited(f"telegram:{user.id if user else message.chat_id}")
    if limited is not None:
        await _notify_flood(message, context, limited)
        return
    if isinstance(picked, Answer):
        await send_answer(message, picked)
        return
    refused = recognizer.refuse_attachment(size=picked.size, mime_type=picked.mime_type, filename=picked.filename)
    if refused is not None:
        await send_answer(message, refused)
        return
    started = time.perf_counter()
    typing = asyncio.create_task(context.bot.send_chat_action(message.chat_id, ChatAction.TYPING))
    try:
        file = await context.bot.get_file(picked.file_id)
        data = bytes(await file.download_as_bytearray())
    except BadRequest as exc:
        too_big = "too big" in str(exc).lower()
        log.warning("getFile refused: %s", exc)
        answer = recognizer.too_large_answer() if too_big else Answer(Outcome.NOT_IMAGE, DOWNLOAD_FAILED)
    except NetworkError as exc:
        log.warning("download failed: %r", exc)
        answer = Answer(Outcome.UNAVAILABLE, DOWNLOAD_FAILED)
    else:
        answer = await recognizer.recognize(data)
    await _settle(typing)
    log.info(
        "chat=%s outcome=%s digit=%s confidence=%s ms=%.0f",
        message.chat_id, answer.outcome.value, answer.digit,
        f"{answer.confidence:.3f}" if answer.confidence is not None else None,
        (time.perf_counter() - started) * 1000,
    )
    with_seen = bool(context.chat_data and context.chat_data.get(SEEN_KEY))
    await send_answer(message, answer, with_seen=with_seen)


async def _notify_flood(message: Message, context: ContextTypes.DEFAULT_TYPE, answer: Answer) -> None:
    """Answer a flood once per FLOOD_NOTICE_EVERY seconds: replying to every message would be a flood too."""
    user_data = context.user_data if context.user_data is not None else {}
    now = time.monotonic()
    if now - user_data.get(FLOOD_NOTICE_KEY, -FLOOD_NOTICE_EVERY) < FLOOD_NOTICE_EVERY:
        return
    user_data[FLOOD_NOTICE_KEY] = now
    await send_answer(message, answer)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any handler failure is logged and answered; it never stops the bot."""
    log.error("handler failed: %r", context.error, exc_info=context.error)
    if isinstance(update, Update) and update.effective_message is not None:
        try:
            await update.effective_message.reply_text(HANDLER_FAILED)
        except TelegramError as exc:
            log.warning("could not report the failure to the chat: %r", exc)


# -- application ----------------------------------------------------------------------------------
IMAGE_FILTER = filters.PHOTO | filters.Document.ALL | filters.Sticker.ALL


def build_application(
    token: str, *, api_url: str = DEFAULT_API_URL, config: CoreConfig | None = None
) -> Application:
    """The PTB Application with every handler; the gRPC client is opened and closed with it."""
    config = config or CoreConfig()
    root = api_url.rstrip("/")

    async def post_init(app: Application) -> None:
        try:
            await app.bot.set_my_commands(COMMANDS)
        except TelegramError as exc:  # cosmetic: the bot works without its command menu
            log.warning("setMyCommands failed: %r", exc)
        log.info("telegram bot @%s ready; digits server %s", app.bot.username, config.digits_server)

    async def post_shutdown(app: Application) -> None:
        recognizer = app.bot_data.get(RECOGNIZER_KEY)
        if recognizer is not None:
            await recognizer.client.close()

    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .concurrent_updates(True)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    # The client opens its channel lazily on first use, so it can be built before the loop runs.
    app.bot_data[RECOGNIZER_KEY] = make_recognizer(config)
    app.add_handler(CommandHandler(["start", "help"], on_help))
    app.add_handler(CommandHandler("seen", on_seen))
    app.add_handler(MessageHandler(IMAGE_FILTER, on_image))
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
    parser = argparse.ArgumentParser(
        prog="digits-telegram",
        description="Telegram bot that reads handwritten digits from photos (via the digits gRPC server).",
        epilog="Environment (.env is read if present): TELEGRAM_BOT_TOKEN (required), DIGITS_SERVER "
        "(default 127.0.0.1:50051), TELEGRAM_API_URL (default https://api.telegram.org), "
        "TELEGRAM_WEBHOOK_SECRET (webhook mode), DIGITS_API_TOKEN.",
    )
    parser.add_argument("--webhook-url", help="public HTTPS URL Telegram should POST updates to (enables webhook mode)")
    parser.add_argument("--listen", default="0.0.0.0", help="webhook mode: address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8443, help="webhook mode: port to listen on (default 8443)")
    parser.add_argument("--url-path", default="telegram", help="webhook mode: local path (default 'telegram')")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"), help="logging level (default INFO)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of digits-telegram; returns the exit code (2: configuration error)."""
    args = parse_args(argv)
    load_env()
    token = os.environ.get("TELEGRAM_BOT_TOKEN", "").strip()
    if not token:
        print(
            "digits-telegram: TELEGRAM_BOT_TOKEN is not set. Create a bot with @BotFather, then\n"
            "  export TELEGRAM_BOT_TOKEN=...   (or put TELEGRAM_BOT_TOKEN=... in a .env file)",
            file=sys.stderr,
        )
        return 2
    secret = os.environ.get("TELEGRAM_WEBHOOK_SECRET") or None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redactor = protect_secrets(token, secret)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_NoTracebackForBadToken())
    api_url = os.environ.get("TELEGRAM_API_URL") or DEFAULT_API_URL
    app = build_application(token, api_url=api_url, config=config_from_env())
    try:
        if args.webhook_url:
            app.run_webhook(
                listen=args.listen,
                port=args.port,
                url_path=args.url_path,
                webhook_url=args.webhook_url,
                secret_token=secret,
                bootstrap_retries=-1,
            )
        else:
            app.run_polling(bootstrap_retries=-1)
    except InvalidToken:
        print("digits-telegram: Telegram rejected TELEGRAM_BOT_TOKEN; check it with @BotFather.", file=sys.stderr)
        return 2
    except (NetworkError, OSError) as exc:
        print(f"digits-telegram: cannot reach the Telegram Bot API at {api_url}: {redactor.redact(str(exc))}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
