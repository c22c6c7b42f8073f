"""One type for every request the server cannot answer, and the one table from its reason to a gRPC code.

The preprocessing pool, the servicer's checks and the batcher's failures all end up as a
`RequestFailed(reason, message)`; the servicer turns it into a status with ErrorInfo in one place
(`DigitClassifierService._serve`), or into a PredictBatch item's error when it concerns one item.
The message is written once, where the failure is known, for the person who reads it.
"""

from __future__ import annotations

import grpc
from digits.v1.errors import Reason

_INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_A_DIGIT_MESSAGE = (
    "that doesn't look like a digit (a letter, a symbol or a drawing?): send a photo of handwritten digits 0-9"
)
SEVERAL_DIGITS_MESSAGE = "the image holds several digits; Predict reads one digit: use Read for numbers"

CODE_BY_REASON: dict[Reason, grpc.StatusCode] = {
    Reason.NO_INPUT: _INVALID,
    Reason.BAD_REQUEST: _INVALID,
    Reason.BATCH_TOO_LARGE: _INVALID,
    Reason.UNREADABLE_IMAGE: _INVALID,
    Reason.IMAGE_TOO_LARGE: _INVALID,
    Reason.BAD_PIXELS: _INVALID,
    Reason.NO_DIGIT_FOUND: _INVALID,
    Reason.SEVERAL_DIGITS: _INVALID,
    Reason.NOT_A_DIGIT: _INVALID,
    Reason.MESSAGE_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.QUEUE_FULL: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
    Reason.NOT_READY: grpc.StatusCode.UNAVAILABLE,
    Reason.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Reason.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Reason.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Reason.CANCELLED: grpc.StatusCode.CANCELLED,
    Reason.INTERNAL: grpc.StatusCode.INTERNAL,
    Reason.BAD_LABEL: _INVALID,
    Reason.BAD_USER: _INVALID,
    Reason.BAD_FIELD: _INVALID,
    Reason.FEEDBACK_DISABLED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.UNMATCHED_DIGITS: _INVALID,
}


class RequestFailed(Exception):
    """A request (or one PredictBatch item) that gets no prediction. Picklable: the preprocessing
    workers return it across the process boundary as it is."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(Reason(reason), message)

    @property
    def reason(self) -> Reason:
        return self.args[0]

    @property
    def message(self) -> str:
        return self.args[1]

    @property
    def code(self) -> grpc.StatusCode:
        return CODE_BY_REASON[self.reason]

    @property
    def per_item(self) -> bool:
        """True when it concerns this input alone (a bad photo), not the whole call (a full queue)."""
        return self.code == _INVALID

    def __str__(self) -> str:
        return self.message
