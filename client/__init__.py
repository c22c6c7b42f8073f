"""All the bots (and any other program) need to know of the digits server: `DigitsClient`, its
`Prediction` and one exception family, plus `digits-predict`. It depends only on the gRPC
contract (`digits.v1`), never on the server's code or on torch.

    async with DigitsClient("127.0.0.1:50051") as client:
        prediction = await client.predict_image(photo_bytes)
"""

from client.client import (
    BadPixels,
    BadRequest,
    DigitRead,
    DigitsClient,
    DigitsError,
    FeedbackDisabled,
    ImageTooLarge,
    InvalidInput,
    NoDigitFound,
    NotADigit,
    Overloaded,
    Prediction,
    Reading,
    ServerUnavailable,
    SeveralDigits,
    Unauthenticated,
    UnreadableImage,
    error_from_rpc,
)

__all__ = [
    "BadPixels",
    "BadRequest",
    "DigitRead",
    "DigitsClient",
    "DigitsError",
    "FeedbackDisabled",
    "ImageTooLarge",
    "InvalidInput",
    "NoDigitFound",
    "NotADigit",
    "Overloaded",
    "Prediction",
    "Reading",
    "ServerUnavailable",
    "SeveralDigits",
    "Unauthenticated",
    "UnreadableImage",
    "error_from_rpc",
]
