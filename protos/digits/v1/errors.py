"""One place for error codes: gRPC status + google.rpc.ErrorInfo (domain digits.v1) on the server,
and the reverse mapping the client uses. Kept free of torch so the client stays light."""

from __future__ import annotations

from enum import StrEnum

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "digits.v1"
DETAILS_KEY = "grpc-status-details-bin"


class Reason(StrEnum):
    """Stable machine-readable reasons; clients switch on these, people read the message."""

    NO_INPUT = "NO_INPUT"
    BAD_REQUEST = "BAD_REQUEST"  # the message's bytes are not the method's request type
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    UNREADABLE_IMAGE = "UNREADABLE_IMAGE"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    BAD_PIXELS = "BAD_PIXELS"
    NO_DIGIT_FOUND = "NO_DIGIT_FOUND"
    SEVERAL_DIGITS = "SEVERAL_DIGITS"  # Predict on a picture of a number: Read answers it
    NOT_A_DIGIT = "NOT_A_DIGIT"  # a letter, a symbol, a doodle: the model's not-a-digit gate refused it
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    QUEUE_FULL = "QUEUE_FULL"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    NOT_READY = "NOT_READY"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    CANCELLED = "CANCELLED"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
    # Feedback / Forget (issue 12)
    BAD_LABEL = "BAD_LABEL"  # `predicted` not 0..9, or `correct` not 0..9 / -1 ("not a digit")
    BAD_USER = "BAD_USER"  # Forget without a user, or a user id shaped like a raw platform id
    BAD_FIELD = "BAD_FIELD"  # model_version / source / user longer than the store keeps
    FEEDBACK_DISABLED = "FEEDBACK_DISABLED"  # the server runs without --feedback-db (FAILED_PRECONDITION)
    UNMATCHED_DIGITS = "UNMATCHED_DIGITS"  # Read's `expected`: no cut of the image gives that many digits


def rich_status(code: grpc.StatusCode, reason: Reason | str, message: str, **metadata: str) -> grpc.Status:
    """A grpc.Status carrying an ErrorInfo detail, for `context.abort_with_status`."""
    info = error_details_pb2.ErrorInfo(reason=str(reason), domain=DOMAIN, metadata=metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    proto = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(proto)


def error_info(trailing_metadata) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail in a failed call's trailing metadata, if the server attached one."""
    for key, value in trailing_metadata or ():
        if key == DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info
    return None


__all__ = ["DETAILS_KEY", "DOMAIN", "Reason", "error_info", "rich_status"]
