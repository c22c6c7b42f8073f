"""The encoder, its checkpoint format and the one declaration of its input and output shape.

Importing this package is cheap (no torch): the server's gRPC process reads `model.shape` without
loading PyTorch; `model.encoder` and `model.checkpoint` bring torch in when they are imported.
"""
