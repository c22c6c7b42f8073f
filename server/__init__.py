"""The digits gRPC inference server (issue 4) and the small client the bots use.

Importing this package is cheap (no torch): `server.client` must stay usable from the bots.
"""
