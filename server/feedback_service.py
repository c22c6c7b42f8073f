"""Feedback and Forget for the servicer: validate, write to the store off the event loop, reply.

Kept apart from service.py (which serves predictions) so the servicer only delegates to it."""

from __future__ import annotations

from digits.v1 import digits_pb2
from digits.v1.errors import Reason

from server.failures import RequestFailed
from server.feedback_store import FeedbackRejected, FeedbackStore


def _store(store: FeedbackStore | None) -> FeedbackStore:
    if store is None:
        raise RequestFailed(
            Reason.FEEDBACK_DISABLED,
            "this server keeps no feedback: start it with --feedback-db PATH",
        )
    return store


def _rejected(exc: FeedbackRejected) -> RequestFailed:
    return RequestFailed(Reason(exc.reason), exc.message)


async def feedback(store: FeedbackStore | None, request: digits_pb2.FeedbackRequest) -> digits_pb2.FeedbackReply:
    """Store one correction; the reply (its id) goes out only once the record is committed to disk."""
    store = _store(store)
    try:
        record_id = await store.add_async(
            request.pixels,
            request.predicted,
            request.correct,
            model_version=request.model_version,
            source=request.source or "api",
            user=request.user,
        )
    except FeedbackRejected as exc:
        raise _rejected(exc) from None
    return digits_pb2.FeedbackReply(id=record_id)


async def forget(store: FeedbackStore | None, request: digits_pb2.ForgetRequest) -> digits_pb2.ForgetReply:
    """Delete everything stored for one pseudonymous user."""
    store = _store(store)
    try:
        deleted = await store.forget_async(request.user)
    except FeedbackRejected as exc:
        raise _rejected(exc) from None
    return digits_pb2.ForgetReply(deleted=deleted)
