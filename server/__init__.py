"""The digits gRPC inference server: servicer, dynamic batcher, preprocessing pool, model process.

Importing this package is cheap (no torch): torch is loaded only in the model process.
"""
