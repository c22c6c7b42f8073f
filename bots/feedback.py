"""Corrections in chat: the right/wrong buttons under an answer, for both platforms.

Why here, once: Telegram and Discord must agree on who may correct (only the sender), what is
sent to the server (the 28x28 image the model saw, its answer, the user's label, a pseudonymous
id), and what a second tap does (nothing: one record, one thanks).

- The user id sent to the server is a keyed hash (HMAC-SHA256) of "platform:id" with
  DIGITS_FEEDBACK_SECRET, so the server never sees a platform id and ids cannot be reversed
  without the key. With the variable unset, a secret is generated on first run and saved in
  DIGITS_FEEDBACK_SECRET_FILE (default `.digits-feedback-secret`, mode 0600).
- The buttons carry only a short random token and the choice (`fb:<token>:<choice>`): stable
  ids that work after a restart because the answer they belong to (the 28x28 image, the answer,
  the sender's hash) waits until it is corrected or expires (7 days): in Redis when DIGITS_REDIS_URL
  is set (bots.redis_store.RedisPending), so that webhook replicas on different hosts share it (the
  answer sent by one replica, its button tapped through another); else in a small SQLite file
  (DIGITS_FEEDBACK_PENDING, default `.digits-feedback-pending.sqlite3`), which one process (or
  replicas on one host sharing the file) can use.
- A number (read with Read) is corrected by replying to the answer with the right number: each digit
  read waits as a pending answer of its own (`offer_number`), the answer message's tokens are kept in
  the chat state (bots.chatstate: Redis with DIGITS_REDIS_URL) under the message's id, and a reply records
  one Feedback per digit of the right number (`correct_number`), once, by the sender only. The photo is
  fetched again from the platform (never kept by the bot) and read with the right number as `expected`,
  so each digit's image is the right piece of the photo even where the reading cut it wrong or found
  another count of digits; when it cannot be fetched or cut so, a reply with as many digits as were read
  is matched one to one with the pieces read, and any other is asked for again.
- DIGITS_FEEDBACK=off: no buttons, nothing kept.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bots.config import ConfigError, env_flag
from client import DigitsClient, DigitsError, FeedbackDisabled

log = logging.getLogger(__name__)

FEEDBACK_ENV = "DIGITS_FEEDBACK"
SECRET_ENV = "DIGITS_FEEDBACK_SECRET"
SECRET_FILE_ENV = "DIGITS_FEEDBACK_SECRET_FILE"
PENDING_ENV = "DIGITS_FEEDBACK_PENDING"
DEFAULT_SECRET_FILE = ".digits-feedback-secret"
DEFAULT_PENDING_FILE = ".digits-feedback-pending.sqlite3"
PENDING_TTL = 7 * 24 * 3600.0
NOT_A_DIGIT = -1
PREFIX = "fb"
CHOICE_RIGHT, CHOICE_WRONG, CHOICE_NOT_DIGIT = "ok", "no", "x"
ID_PATTERN = re.compile(rf"{PREFIX}:(?P<token>[0-9a-f]{{16}}):(?P<choice>ok|no|x|[0-9])")


def new_token() -> str:
    """The random part of a button id: 16 hex digits, as ID_PATTERN expects."""
    return secrets.token_hex(8)


def button_id(token: str, choice: str) -> str:
    """The stable id of one button (Telegram callback_data, Discord custom_id): at most 22 characters."""
    return f"{PREFIX}:{token}:{choice}"


def parse_button_id(value: str) -> tuple[str, str] | None:
    m = ID_PATTERN.fullmatch(value or "")
    return (m["token"], m["choice"]) if m else None


def load_secret(env: Mapping[str, str], path: Path) -> bytes:
    """DIGITS_FEEDBACK_SECRET, else the saved one, else a new one saved to `path` (owner-only)."""
    raw = (env.get(SECRET_ENV) or "").strip()
    if raw:
        if len(raw) < 16:
            raise ConfigError(f"{SECRET_ENV} must be at least 16 characters (it keys the users' pseudonyms)")
        return raw.encode()
    if path.is_file():
        return path.read_text().strip().encode()
    value = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    log.info("generated the feedback secret (keys users' pseudonyms) and saved it in %s", path.resolve())
    return value.encode()


def pseudonym(secret: bytes, platform: str, user_id: int | str) -> str:
    """An opaque, stable id for one chat user: never the platform id, not reversible without the secret."""
    return "u-" + hmac.new(secret, f"{platform}:{user_id}".encode(), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class FeedbackConfig:
    enabled: bool = True
    secret_file: Path = Path(DEFAULT_SECRET_FILE)
    pending_file: Path = Path(DEFAULT_PENDING_FILE)


def feedback_config_from_env(env: Mapping[str, str] | None = None) -> FeedbackConfig:
    env = os.environ if env is None else env
    return FeedbackConfig(
        enabled=env_flag(env, FEEDBACK_ENV, True),
        secret_file=Path(env.get(SECRET_FILE_ENV) or DEFAULT_SECRET_FILE),
        pending_file=Path(env.get(PENDING_ENV) or DEFAULT_PENDING_FILE),
    )


@dataclass(frozen=True)
class Pending:
    token: str
    owner: str
    pixels: bytes
    predicted: int
    model_version: str
    source: str
    created: float
    label: int | None  # None until recorded


class PendingStore:
    """Answers waiting for a tap, in SQLite so the buttons still work after a restart."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS pending (token TEXT PRIMARY KEY, owner TEXT NOT NULL, pixels BLOB NOT NULL,"
                " predicted INTEGER NOT NULL, model_version TEXT NOT NULL, source TEXT NOT NULL, created REAL NOT NULL,"
                " label INTEGER)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS pending_owner ON pending (owner)")

    def add(self, owner: str, pixels: bytes, predicted: int, model_version: str, source: str) -> str:
        token = new_token()
        now = time.time()
        with self._lock:
            self._db.execute("DELETE FROM pending WHERE created < ?", (now - PENDING_TTL,))
            self._db.execute(
                "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                (token, owner, pixels, predicted, model_version, source, now),
            )
        return token

    def get(self, token: str) -> Pending | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM pending WHERE token = ?", (token,)).fetchone()
        if row is None or row[6] < time.time() - PENDING_TTL:
            return None
        return Pending(*row)

    def claim(self, token: str, label: int) -> bool:
        """Record `label` once; False if a label was already recorded (a second tap, a race)."""
        with self._lock:
            cur = self._db.execute("UPDATE pending SET label = ? WHERE token = ? AND label IS NULL", (label, token))
        return cur.rowcount == 1

    def release(self, token: str) -> None:
        with self._lock:
            self._db.execute("UPDATE pending SET label = NULL WHERE token = ?", (token,))

    def forget(self, owner: str) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM pending WHERE owner = ?", (owner,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


class PendingUnavailable(Exception):
    """The shared pending-answer store (Redis) could not be reached; the tap can be tried again."""


class PendingAnswers(Protocol):
    """Where answers wait for a tap: `LocalPending` (SQLite) or `bots.redis_store.RedisPending`."""

    async def add(self, owner: str, pixels: bytes, predicted: int, model_version: str, source: str) -> str:
        ...

    async def get(self, token: str) -> Pending | None:
        ...

    async def claim(self, token: str, label: int) -> bool:
        ...

    async def release(self, token: str) -> None:
        ...

    async def forget(self, owner: str) -> int:
        ...

    async def close(self) -> None:
        ...


class LocalPending:
    """PendingAnswers over the SQLite PendingStore, off the event loop (SQLite calls block)."""

    def __init__(self, path: Path) -> None:
        self.store = PendingStore(path)

    async def add(self, owner: str, pixels: bytes, predicted: int, model_version: str, source: str) -> str:
        return await asyncio.to_thread(self.store.add, owner, pixels, predicted, model_version, source)

    async def get(self, token: str) -> Pending | None:
        return await asyncio.to_thread(self.store.get, token)

    async def claim(self, token: str, label: int) -> bool:
        return await asyncio.to_thread(self.store.claim, token, label)

    async def release(self, token: str) -> None:
        await asyncio.to_thread(self.store.release, token)

    async def forget(self, owner: str) -> int:
        return await asyncio.to_thread(self.store.forget, owner)

    async def close(self) -> None:
        self.store.close()


def make_pending(config: FeedbackConfig, redis_url: str | None) -> PendingAnswers:
    """Redis when DIGITS_REDIS_URL is set (shared by every replica), else the local SQLite file."""
    if redis_url:
        from bots.redis_store import RedisPending, connect  # redis is only imported when configured

        return RedisPending(connect(redis_url))
    return LocalPending(config.pending_file)


class Result(enum.StrEnum):
    ASK_DIGIT = "ask_digit"  # "wrong": show 0-9 and "not a digit"
    WRONG_LENGTH = "wrong_length"  # a number's correction with another count of digits than were read
    RECORDED = "recorded"
    ALREADY = "already"  # a label was recorded before: no second record, no second thanks
    NOT_YOURS = "not_yours"
    EXPIRED = "expired"
    FAILED = "failed"  # the server could not store it; the user may tap again
    OFF = "off"


@dataclass(frozen=True)
class Outcome:
    result: Result
    label: int | None = None  # RECORDED / ALREADY: what was recorded (NOT_A_DIGIT for "not a digit")
    predicted: int | None = None


@dataclass(frozen=True)
class NumberOutcome:
    result: Result
    read: str = ""  # the digits as read
    corrected: str = ""  # RECORDED / ALREADY: the digits recorded


NUMBER_TOKENS_KEY = "number"  # chat-state key prefix: the tokens of a number answer, under the answer's id
NUMBER_PHOTO_KEY = "number-photo"  # chat-state key prefix: where to fetch the answered photo again (not the photo)
Fetch = Callable[[], Awaitable[bytes]]  # the answered photo, downloaded again from the platform
NUMBER_REPLY = re.compile(r"\s*[0-9][0-9\s]*")  # a reply that is a number: digits (and spaces, new lines) only


def number_key(platform: str, chat_id: int | str, message_id: int | str) -> str:
    """Where a number answer's tokens wait in the chat state: one key per answer message."""
    return f"{NUMBER_TOKENS_KEY}:{platform}:{chat_id}:{message_id}"


def number_photo_key(platform: str, chat_id: int | str, message_id: int | str) -> str:
    """Where a number answer keeps the platform's reference to the photo it read (a Telegram file id, a
    Discord attachment URL), for reading it again with the user's correction."""
    return f"{NUMBER_PHOTO_KEY}:{platform}:{chat_id}:{message_id}"


def join_tokens(tokens: list[str]) -> str:
    return ",".join(tokens)


def split_tokens(value: str | None) -> list[str]:
    tokens = (value or "").split(",")
    return tokens if value and all(ID_PATTERN.fullmatch(button_id(t, CHOICE_RIGHT)) for t in tokens) else []


class Feedback:
    """The platform-independent correction flow."""

    def __init__(self, client: DigitsClient, config: FeedbackConfig, env: Mapping[str, str] | None = None, *,
                 redis_url: str | None = None) -> None:
        """`redis_url` (DIGITS_REDIS_URL): keep pending answers in Redis, shared by every replica."""
        self.client = client
        self.enabled = config.enabled
        self.secret = load_secret(os.environ if env is None else env, config.secret_file) if self.enabled else b""
        self.pending: PendingAnswers | None = make_pending(config, redis_url) if self.enabled else None

    def user(self, platform: str, user_id: int | str) -> str:
        return pseudonym(self.secret, platform, user_id)

    async def offer(self, platform: str, user_id: int | str, pixels: bytes | None, digit: int | None,
                    model_version: str | None) -> str | None:
        """Keep an answer for correction; returns the token its buttons carry (None: no buttons)."""
        if self.pending is None or not pixels or digit is None:
            return None
        try:
            return await self.pending.add(self.user(platform, user_id), pixels, digit, model_version or "", platform)
        except PendingUnavailable:  # the answer goes out without buttons rather than not at all
            return None

    async def choose(self, platform: str, user_id: int | str, token: str, choice: str) -> Outcome:
        """One tap. Only the sender may correct; a label is recorded (and thanked for) once."""
        if self.pending is None:
            return Outcome(Result.OFF)
        try:
            return await self._choose(platform, user_id, token, choice)
        except PendingUnavailable:
            return Outcome(Result.FAILED)

    async def _choose(self, platform: str, user_id: int | str, token: str, choice: str) -> Outcome:
        assert self.pending is not None
        entry = await self.pending.get(token)
        if entry is None:
            return Outcome(Result.EXPIRED)
        if not hmac.compare_digest(entry.owner, self.user(platform, user_id)):
            return Outcome(Result.NOT_YOURS)
        if entry.label is not None:
            return Outcome(Result.ALREADY, entry.label, entry.predicted)
        if choice == CHOICE_WRONG:
            return Outcome(Result.ASK_DIGIT, predicted=entry.predicted)
        labels = {CHOICE_RIGHT: entry.predicted, CHOICE_NOT_DIGIT: NOT_A_DIGIT}
        label = labels[choice] if choice in labels else int(choice)
        if not await self.pending.claim(token, label):
            fresh = await self.pending.get(token)
            return Outcome(Result.ALREADY, fresh.label if fresh else label, entry.predicted)
        try:
            await self.client.feedback(entry.pixels, entry.predicted, label, model_version=entry.model_version,
                                       source=platform, user=entry.owner)
        except DigitsError as exc:
            log.warning("feedback not stored (%s): %s", exc.reason, exc)
            await self.pending.release(token)
            return Outcome(Result.FAILED, predicted=entry.predicted)
        return Outcome(Result.RECORDED, label, entry.predicted)

    async def offer_number(self, platform: str, user_id: int | str, digits: list[tuple[bytes, int]],
                           model_version: str | None) -> list[str]:
        """Keep each digit of a number answer for correction ((pixels, digit read) each, in reading order);
        returns their tokens ([]: no correction possible), to be kept with the answer's message id."""
        if self.pending is None or not digits or not all(pixels for pixels, _ in digits):
            return []
        owner = self.user(platform, user_id)
        try:
            return [await self.pending.add(owner, pixels, digit, model_version or "", platform)
                    for pixels, digit in digits]
        except PendingUnavailable:
            return []

    async def correct_number(self, platform: str, user_id: int | str, tokens: list[str], text: str,
                             fetch: Fetch | None = None) -> NumberOutcome:
        """A reply with the right number to a number answer: one record per digit, once, by the sender only.

        `fetch` downloads the answered photo again: it is read with the right number as `expected` (Read
        cuts it into exactly those digits), and each piece is recorded with its digit. Without it, or when
        that fails, the reply must have as many digits as were read (else WRONG_LENGTH: nothing is
        recorded), matched one to one with the pieces of the first reading."""
        if self.pending is None:
            return NumberOutcome(Result.OFF)
        try:
            return await self._correct_number(platform, user_id, tokens, text, fetch)
        except PendingUnavailable:
            return NumberOutcome(Result.FAILED)

    async def _cut_again(self, fetch: Fetch | None, text: str, count: int) -> list[tuple[bytes, int]] | None:
        """The photo read again with `text` as `expected`: (pixels, digit read) per digit of `text`, or None."""
        if fetch is None:
            return None
        try:
            reading = await self.client.read_image(await fetch(), expected=text)
        except DigitsError as exc:  # UNMATCHED_DIGITS, the server down, ...: the first reading's pieces
            log.info("correction not cut again (%s): %s", exc.reason, exc)
            return None
        except Exception as exc:  # the platform no longer has the photo, a network error
            log.info("correction not cut again: the photo could not be fetched (%r)", exc)
            return None
        pieces = [(d.pixels, d.digit) for d in reading.digits]
        return pieces if len(pieces) == count and all(p for p, _ in pieces) else None

    async def _correct_number(self, platform: str, user_id: int | str, tokens: list[str], text: str,
                              fetch: Fetch | None) -> NumberOutcome:
        assert self.pending is not None
        found = [await self.pending.get(t) for t in tokens]
        entries = [e for e in found if e is not None]
        if not entries or len(entries) != len(tokens):
            return NumberOutcome(Result.EXPIRED)
        read = "".join(str(e.predicted) for e in entries)
        if not all(hmac.compare_digest(e.owner, self.user(platform, user_id)) for e in entries):
            return NumberOutcome(Result.NOT_YOURS, read)
        if any(e.label is not None for e in entries):
            return NumberOutcome(Result.ALREADY, read, "".join(str(e.label) for e in entries))
        digits = [int(c) for c in text if c.isdigit()]
        if not digits:
            return NumberOutcome(Result.WRONG_LENGTH, read)
        if digits == [e.predicted for e in entries]:  # "right as read": the pieces read are the right pieces
            pieces = None
        else:
            pieces = await self._cut_again(fetch, "".join(map(str, digits)), len(digits))
        if pieces is None and len(digits) != len(entries):
            return NumberOutcome(Result.WRONG_LENGTH, read)
        if pieces is None:
            pieces = [(e.pixels, e.predicted) for e in entries]
        claimed: list[str] = []
        for i, token in enumerate(tokens):  # every token is claimed, so that a second reply records nothing
            label = digits[min(i, len(digits) - 1)]
            if not await self.pending.claim(token, label):  # a second reply racing this one: it records
                for t in claimed:
                    await self.pending.release(t)
                return NumberOutcome(Result.ALREADY, read)
            claimed.append(token)
        entry = entries[0]
        try:
            for (pixels, predicted), label in zip(pieces, digits, strict=True):
                await self.client.feedback(pixels, predicted, label, model_version=entry.model_version,
                                           source=platform, user=entry.owner)
        except DigitsError as exc:  # the user may reply again; digits already stored come again as exact
            log.warning("feedback not stored (%s): %s", exc.reason, exc)  # duplicates, which export drops
            for t in claimed:
                await self.pending.release(t)
            return NumberOutcome(Result.FAILED, read)
        return NumberOutcome(Result.RECORDED, read, "".join(map(str, digits)))

    async def forget(self, platform: str, user_id: int | str) -> int | None:
        """Delete everything kept for this user (server records and pending answers); None when feedback is off
        or the server could not be reached."""
        if self.pending is None:
            return None
        owner = self.user(platform, user_id)
        try:
            await self.pending.forget(owner)
            pending_gone = True
        except PendingUnavailable:  # still delete the server's records; the user is asked to try again
            pending_gone = False
        try:
            deleted = await self.client.forget(owner)
        except FeedbackDisabled:  # the server keeps nothing, so nothing of theirs is kept there
            deleted = 0
        except DigitsError as exc:
            log.warning("forget failed (%s): %s", exc.reason, exc)
            return None
        return deleted if pending_gone else None

    async def aclose(self) -> None:
        if self.pending is not None:
            await self.pending.close()
