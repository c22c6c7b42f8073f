"""MNIST-style preprocessing for the server: image bytes -> 28x28 uint8, or a clear error."""

from preprocessing.mnist_style import (
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    Preprocessed,
    PreprocessError,
    UnreadableImageError,
    preprocess,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageTooLargeError",
    "PreprocessError",
    "Preprocessed",
    "UnreadableImageError",
    "preprocess",
]
