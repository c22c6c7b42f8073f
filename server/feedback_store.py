"""The feedback store: users' corrections of the model's answers, in one SQLite file.

Why SQLite: one file an operator can copy, back up and merge (`digits-feedback export` takes one
file per replica), safe with several writers (its own file locks), nothing to run beside the
server. Stdlib only and no torch, so the server, the operator's CLI and tests import it cheaply.

Durability: the journal is WAL (readers never block the writer, a killed writer leaves the file
consistent) with `synchronous=FULL`, so every commit fsyncs the WAL before `add` returns. With
NORMAL, a commit already survives the *process* being killed (it is in the OS page cache) but the
last commits can be lost on a power cut or kernel crash; an acknowledged correction must survive
both, and corrections arrive at human speed (a tap each), so the one fsync per record is free.

What is kept (and what is not): the 28x28 image the model saw, what it said, what the user says,
the model version, the source ("telegram", ...), an opaque pseudonymous user id, and the time.
Never the photo, never a name or a platform id: the bots hash the id with a secret key first.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from model.shape import NUM_CLASSES, PIXELS_LEN

NOT_A_DIGIT = -1  # `correct` when the user says the picture is no digit at all
MAX_TEXT = 128  # model_version, source, user: short labels, never free text
BUSY_TIMEOUT_MS = 30_000  # another process holding the write lock: wait, do not fail

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    pixels BLOB NOT NULL CHECK (length(pixels) = 784),
    predicted INTEGER NOT NULL CHECK (predicted BETWEEN 0 AND 9),
    correct INTEGER NOT NULL CHECK (correct BETWEEN -1 AND 9),
    model_version TEXT NOT NULL,
    source TEXT NOT NULL,
    user TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user);
"""


class FeedbackRejected(ValueError):
    """A record that must not be stored; `reason` is a digits.v1 Reason name (BAD_PIXELS, BAD_LABEL, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class Record:
    id: str
    pixels: bytes
    predicted: int
    correct: int  # 0..9, or NOT_A_DIGIT
    model_version: str
    source: str
    user: str
    created: float  # seconds since the epoch, UTC


def validate(pixels: bytes, predicted: int, correct: int, model_version: str, source: str, user: str) -> None:
    """Raise FeedbackRejected for anything the store must refuse (the server turns it into INVALID_ARGUMENT)."""
    if len(pixels) != PIXELS_LEN:
        raise FeedbackRejected(
            "BAD_PIXELS", f"`pixels` must be the {PIXELS_LEN}-byte 28x28 image from the answer, got {len(pixels)} bytes"
        )
    if not 0 <= predicted < NUM_CLASSES:
        raise FeedbackRejected("BAD_LABEL", f"`predicted` must be 0..{NUM_CLASSES - 1}, got {predicted}")
    if not (0 <= correct < NUM_CLASSES or correct == NOT_A_DIGIT):
        raise FeedbackRejected(
            "BAD_LABEL", f"`correct` must be 0..{NUM_CLASSES - 1}, or {NOT_A_DIGIT} for 'not a digit'; got {correct}"
        )
    for name, value in (("model_version", model_version), ("source", source), ("user", user)):
        if len(value) > MAX_TEXT:
            raise FeedbackRejected("BAD_FIELD", f"`{name}` is {len(value)} characters; at most {MAX_TEXT}")
    if user.isdigit():  # the shape of a raw Telegram/Discord id: refuse rather than keep it
        raise FeedbackRejected("BAD_USER", "`user` looks like a raw platform id; send a keyed hash of it instead")


class FeedbackStore:
    """One SQLite file. Blocking methods are thread-safe (one connection per thread); the async
    methods run them on a single worker thread, off the event loop, in arrival order."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None
        with self._connection() as db:
            # journal_mode is a property of the file (it persists); synchronous is per connection.
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise RuntimeError(f"{self.path}: SQLite refused WAL mode (got {mode}); is it on a network share?")
            db.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the lock
            # up front and waits for it (busy_timeout) instead of failing half-way.
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._local.db = db
        return db

    # Blocking API (CLI, tests, the worker thread).

    def add(
        self,
        pixels: bytes,
        predicted: int,
        correct: int,
        model_version: str = "",
        source: str = "api",
        user: str = "",
        created: float | None = None,
    ) -> str:
        """Validate and store one correction; returns its id once it is durably committed."""
        validate(pixels, predicted, correct, model_version, source, user)
        record_id = uuid.uuid4().hex
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record_id, bytes(pixels), predicted, correct, model_version, source, user, created or time.time()),
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return record_id

    def forget(self, user: str) -> int:
        """Delete every record of `user`; returns how many went."""
        if not user:
            raise FeedbackRejected("BAD_USER", "`user` is empty: say whose records to delete")
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            deleted = db.execute("DELETE FROM feedback WHERE user = ?", (user,)).rowcount
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return deleted

    def count(self) -> int:
        return self._connection().execute("SELECT count(*) FROM feedback").fetchone()[0]

    def records(self) -> Iterator[Record]:
        """Every record, oldest first."""
        rows = self._connection().execute(
            "SELECT id, pixels, predicted, correct, model_version, source, user, created FROM feedback "
            "ORDER BY created, id"
        )
        for row in rows:
            yield Record(*row)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.submit(self._close_thread).result()
            self._executor.shutdown()
            self._executor = None
        self._close_thread()

    def _close_thread(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # Async API (the server): the blocking calls on one worker thread, so the event loop never waits on a disk.

    async def add_async(self, *args, **kwargs) -> str:
        return await self._run(lambda: self.add(*args, **kwargs))

    async def forget_async(self, user: str) -> int:
        return await self._run(lambda: self.forget(user))

    async def _run(self, call):
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback-db")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


__all__ = ["NOT_A_DIGIT", "FeedbackRejected", "FeedbackStore", "Record", "validate"]
