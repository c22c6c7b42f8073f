"""What the encoder takes and gives: the one place these numbers are written down.

Everything else (the server's validation, the model process's pipe format, preprocessing's output,
the training data loader) imports them from here, so a change of input size is one edit.
"""

from __future__ import annotations

IMAGE_SIZE = 28  # MNIST: 28x28 pixels, one channel
PIXELS_LEN = IMAGE_SIZE * IMAGE_SIZE  # 784 bytes per image on the wire, row-major, 0 = background, 255 = ink
NUM_CLASSES = 10  # the digits 0-9

__all__ = ["IMAGE_SIZE", "NUM_CLASSES", "PIXELS_LEN"]
