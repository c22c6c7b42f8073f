"""MNIST-style preprocessing shared by the server and the bots: image bytes -> 28x28 uint8."""

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
