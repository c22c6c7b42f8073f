"""Feedback and Forget against real servers writing a real SQLite file: validation, the stored
record, concurrent writers (two server processes on one file), and a SIGKILL mid-stream that
must lose nothing the server acknowledged."""

from __future__ import annotations

import asyncio
import sqlite3

import grpc
import numpy as np
import pytest
from digits.v1 import digits_pb2, digits_pb2_grpc
from digits.v1.errors import error_info

from client import DigitsClient, FeedbackDisabled, InvalidInput
from server.feedback_store import NOT_A_DIGIT, FeedbackStore
from testkit.server_process import ServerProcess


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    return tmp_path_factory.mktemp("feedback") / "feedback.sqlite3"


@pytest.fixture(scope="module")
def feedback_server(shipped_model_path, db_path):
    server = ServerProcess(model=shipped_model_path, args=["--workers", "1", "--feedback-db", str(db_path)])
    server.start()
    yield server
    server.close()


def stored(db_path) -> dict[str, tuple]:
    """Every record in the file, read with plain sqlite3 (not through the store's own code)."""
    with sqlite3.connect(db_path) as db:
        rows = db.execute("SELECT id, pixels, predicted, correct, model_version, source, user, created FROM feedback")
        return {row[0]: row[1:] for row in rows}


def image(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, 784, dtype=np.uint8).tobytes()


async def test_feedback_keeps_what_the_model_saw(feedback_server, db_path, digit_samples):
    async with DigitsClient(feedback_server.target) as client:
        answer = await client.predict_pixels(digit_samples[3][0].tobytes())
        record_id = await client.feedback(
            answer.pixels, answer.digit, 8, model_version=answer.model_version, source="telegram", user="u-abc"
        )
        not_digit = await client.feedback(answer.pixels, answer.digit, NOT_A_DIGIT, source="discord", user="u-abc")
    records = stored(db_path)
    pixels, predicted, correct, version, source, user, created = records[record_id]
    assert (pixels, predicted, correct, version, source, user) == (
        answer.pixels,
        answer.digit,
        8,
        answer.model_version,
        "telegram",
        "u-abc",
    )
    assert created > 1.7e9  # seconds since the epoch
    assert records[not_digit][2] == NOT_A_DIGIT
    assert "u-abc" not in feedback_server.log()  # user ids are not logged


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"pixels": b"\x00" * 783}, "BAD_PIXELS"),
        ({"pixels": b""}, "BAD_PIXELS"),
        ({"correct": 10}, "BAD_LABEL"),
        ({"correct": -2}, "BAD_LABEL"),
        ({"predicted": -1}, "BAD_LABEL"),
        ({"predicted": 10}, "BAD_LABEL"),
        ({"user": "123456789"}, "BAD_USER"),  # the shape of a raw Telegram id
        ({"source": "x" * 500}, "BAD_FIELD"),
    ],
)
async def test_bad_records_are_refused_with_a_reason(feedback_server, db_path, fields, reason):
    request = {"pixels": image(1), "predicted": 1, "correct": 7, "source": "api", "user": "u-bad", **fields}
    before = len(stored(db_path))
    async with grpc.aio.insecure_channel(feedback_server.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await digits_pb2_grpc.DigitClassifierStub(channel).Feedback(
                digits_pb2.FeedbackRequest(**request), timeout=10
            )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(info.value.trailing_metadata()).reason == reason
    assert len(stored(db_path)) == before
    async with DigitsClient(feedback_server.target) as client:  # the client raises its InvalidInput family
        with pytest.raises(InvalidInput) as raised:
            await client.feedback(**request)
        assert raised.value.reason == reason
        assert await client.feedback(image(2), 1, 7, user="u-bad")  # and the server keeps serving


async def test_forget_deletes_only_that_users_records(feedback_server, db_path):
    async with DigitsClient(feedback_server.target) as client:
        mine = [await client.feedback(image(10 + i), 1, 2, user="u-forget-me") for i in range(3)]
        theirs = await client.feedback(image(20), 1, 2, user="u-keep-me")
        assert await client.forget("u-forget-me") == 3
        assert await client.forget("u-forget-me") == 0
        with pytest.raises(InvalidInput) as raised:
            await client.forget("")
        assert raised.value.reason == "BAD_USER"
    records = stored(db_path)
    assert not set(mine) & set(records)
    assert theirs in records


async def test_without_a_store_feedback_is_a_failed_precondition(digits_server):
    async with DigitsClient(digits_server.target) as client:
        with pytest.raises(FeedbackDisabled) as raised:
            await client.feedback(image(1), 1, 2, user="u")
        with pytest.raises(FeedbackDisabled):
            await client.forget("u")
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.reason == "FEEDBACK_DISABLED"


async def send_many(target: str, tag: str, n: int, concurrency: int) -> list[str]:
    async with DigitsClient(target, timeout=30) as client:
        queue = list(range(n))

        async def worker() -> list[str]:
            ids = []
            while queue:
                i = queue.pop()
                ids.append(await client.feedback(image(i), i % 10, (i + 1) % 10, source=tag, user=f"u-{tag}"))
            return ids

        return [i for ids in await asyncio.gather(*(worker() for _ in range(concurrency))) for i in ids]


async def test_concurrent_writers_two_servers_one_file(feedback_server, shipped_model_path, db_path):
    """Two server processes (as two replicas would) and many clients each, writing one file at once."""
    second = ServerProcess(model=shipped_model_path, args=["--workers", "1", "--feedback-db", str(db_path)])
    with second:
        before = len(stored(db_path))
        a, b = await asyncio.gather(
            send_many(feedback_server.target, "a", 150, 8), send_many(second.target, "b", 150, 8)
        )
    assert len(set(a)) == len(a) == 150 and len(set(b)) == len(b) == 150
    records = stored(db_path)
    assert set(a) | set(b) <= set(records)
    assert len(records) == before + 300
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sigkill_mid_stream_loses_nothing_acknowledged(shipped_model_path, tmp_path):
    db = tmp_path / "killed.sqlite3"
    server = ServerProcess(model=shipped_model_path, args=["--workers", "1", "--feedback-db", str(db)])
    server.start()
    acknowledged: list[str] = []
    failures: list[BaseException] = []
    try:
        async with DigitsClient(server.target, timeout=3, retries=0) as client:

            async def writer(w: int) -> None:
                i = 0
                while True:
                    try:
                        acknowledged.append(await client.feedback(image(w * 100_000 + i), 1, 2, user=f"u-{w}"))
                    except Exception as exc:  # the kill: stop writing
                        failures.append(exc)
                        return
                    i += 1

            tasks = [asyncio.create_task(writer(w)) for w in range(8)]
            while len(acknowledged) < 200:
                await asyncio.sleep(0.005)
            server.process.kill()  # SIGKILL while 8 writers have calls in flight
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert len(failures) == 8  # every writer saw the kill: it happened mid-stream
        with FeedbackStore(db) as store:  # opening recovers the WAL; nothing acknowledged is missing
            ids = {record.id for record in store.records()}
        assert set(acknowledged) <= ids
        with sqlite3.connect(db) as check:
            assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        server.start()  # and the same file takes new records after the crash
        async with DigitsClient(server.target) as client:
            assert await client.feedback(image(7), 1, 2, user="u-after")
    finally:
        server.close()
