"""Keeping secrets out of logs.

Why: HTTP libraries log request URLs, and the Telegram Bot API puts the bot token in every URL;
Discord's debug lines carry interaction tokens. One filter on the root handlers redacts them all.
"""

from __future__ import annotations

import logging
import re


class SecretFilter(logging.Filter):
    """Replaces each secret with '***' in every log record: HTTP libraries log URLs that embed bot tokens."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._pattern = re.compile("|".join(re.escape(s) for s in secrets if s)) if any(secrets) else None

    def redact(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern else text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is None:
            return True
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def protect_secrets(*secrets: str | None) -> SecretFilter:
    """Install a SecretFilter on every root handler and quiet the loggers that print request URLs.

    Handler-level filters see records from all loggers (logger-level filters do not propagate),
    so the filter goes on the handlers; call this after logging is configured.
    """
    filt = SecretFilter([s for s in secrets if s])
    root = logging.getLogger()
    for handler in root.handlers:
        handler.addFilter(filt)
    for name in ("httpx", "httpcore", "aiohttp.access", "aiohttp.client"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return filt
