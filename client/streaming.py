"""One PredictStream call, protocol only: send items with their index as id while reading answers,
and hand back each item's PredictResult in the order of the items. `DigitsClient.predict_stream`
turns them into Predictions and errors, retries QUEUE_FULL items, and falls back to PredictBatch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import grpc
from digits.v1 import digits_pb2, digits_pb2_grpc


async def stream_supported(stub: digits_pb2_grpc.DigitClassifierStub, *, timeout: float | None, metadata=None) -> bool:
    """Ask with an empty stream whether the server has PredictStream (False: UNIMPLEMENTED).

    Asked first, with nothing written, because a stream that is writing while an older server
    answers UNIMPLEMENTED ends, on the grpc.aio client, as a vague INTERNAL "error from Core"."""
    call = stub.PredictStream(timeout=timeout, metadata=metadata)
    try:
        await call.done_writing()
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            return False
        raise
    return True


async def stream_results(
    stub: digits_pb2_grpc.DigitClassifierStub,
    items: Sequence[digits_pb2.PredictRequest],
    *,
    timeout: float | None,
    metadata=None,
) -> list[digits_pb2.PredictResult | None]:
    """Results by item index; None for an item the server never answered (it should not happen).
    Raises grpc.aio.AioRpcError when the whole stream fails (UNIMPLEMENTED on an older server)."""
    call = stub.PredictStream(timeout=timeout, metadata=metadata)
    results: list[digits_pb2.PredictResult | None] = [None] * len(items)

    async def send() -> None:
        # call.write waits while HTTP/2 flow control holds: the server reads at its own pace.
        for i, item in enumerate(items):
            await call.write(digits_pb2.PredictStreamRequest(id=i, item=item))
        await call.done_writing()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            answer = await call.read()
            if answer is grpc.aio.EOF:
                break
            if answer.id < len(results):
                results[answer.id] = answer.result
        await sender
    finally:
        if not sender.done():
            sender.cancel()
            call.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await sender
    return results
