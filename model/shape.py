"""What the encoder takes and gives: the one place these numbers are written down.

Everything else (the server's validation, the model process's pipe format, preprocessing's output,
the training data loader) imports them from here, so a change of input size is one edit.
"""

from __future__ import annotations

IMAGE_SIZE = 28  # MNIST: 28x28 pixels, one channel
PIXELS_LEN = IMAGE_SIZE * IMAGE_SIZE  # 784 bytes per image on the wire, row-major, 0 = background, 255 = ink
NUM_CLASSES = 10  # the digits 0-9
# What the served model gives per image: the 10 calibrated digit probabilities, then P(not a digit)
# and P(several touching digits) (model/gate.py; 0 for a checkpoint without that head).
SERVED_COLUMNS = NUM_CLASSES + 2
NOT_A_DIGIT_INDEX = NUM_CLASSES  # that column; also the "digit" of a row whose image the gate refused
SEVERAL_DIGITS_INDEX = NUM_CLASSES + 1  # P(the image is digits run together, not one digit)

__all__ = ["IMAGE_SIZE", "NOT_A_DIGIT_INDEX", "NUM_CLASSES", "PIXELS_LEN", "SERVED_COLUMNS", "SEVERAL_DIGITS_INDEX"]
