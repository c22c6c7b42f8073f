"""The errors preprocessing raises: one base type, each with a stable machine-readable `reason`.

The server maps `reason` onto its google.rpc.ErrorInfo, so these strings are part of the API.
"""

from __future__ import annotations


class PreprocessError(ValueError):
    """Bytes that cannot become a digit image. `reason` is a stable machine-readable code."""

    reason = "UNREADABLE_IMAGE"


class UnreadableImageError(PreprocessError):
    """Empty, truncated, corrupt or non-image bytes, or a format we do not decode."""

    reason = "UNREADABLE_IMAGE"


class ImageTooLargeError(PreprocessError):
    """More pixels than the caller's limit: refused from the header, before any decoding."""

    reason = "IMAGE_TOO_LARGE"
