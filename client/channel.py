"""How the client's gRPC channel spreads calls over replicas and retries them: gRPC's own machinery,
configured through the channel's service config, so nothing here balances or retries by hand.

- Any gRPC target works: `host:port`, `dns:///name:port` (a Kubernetes headless Service: every pod's
  address), or a list `ipv4:127.0.0.1:50051,127.0.0.1:50052`.
- `round_robin` keeps a connection to every address the resolver returns and sends each call to the
  next READY one, so the load spreads evenly and a dead replica is skipped as soon as its
  connection drops. (gRPC's default, `pick_first`, would send everything to one address.)
- The retry policy retries `UNAVAILABLE` (a replica killed mid-call, one draining after SIGTERM,
  an outage) and `CANCELLED` (a call a stopping server cancelled) with exponential backoff within
  the call's deadline. Each attempt is a new pick, so it lands on another replica. gRPC caps attempts
  at 5 (four retries).
"""

from __future__ import annotations

import json

from digits.v1 import digits_pb2

SERVICE_NAME = digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"].full_name
MAX_ATTEMPTS = 5  # gRPC's own ceiling: a policy asking for more gets 5
RETRY_BUFFER_BYTES = 32 * 1024 * 1024  # a call is retried only while its request fits in this buffer

# Reconnect quickly after an outage: gRPC's default backoff grows to 120 s, so a bot would stay
# "unavailable" for minutes after the server came back.
BASE_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.enable_retries", 1),
    # The default (256 KiB) would leave photos larger than that without retries.
    ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
    # Our service config, not one a DNS TXT record might carry.
    ("grpc.service_config_disable_resolution", 1),
)


def _duration(seconds: float) -> str:
    return f"{max(seconds, 0.001):.3f}s"


def service_config(retries: int, backoff: float) -> dict:
    """round_robin over every resolved address, and `retries` retries of UNAVAILABLE whose first
    backoff is up to `backoff` seconds, doubling each time (gRPC draws each wait at random below it)."""
    config: dict = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retries > 0:
        config["methodConfig"] = [
            {
                "name": [{"service": SERVICE_NAME}],
                "retryPolicy": {
                    "maxAttempts": min(retries + 1, MAX_ATTEMPTS),
                    "initialBackoff": _duration(backoff),
                    "maxBackoff": _duration(backoff * 2 ** max(retries - 1, 0)),
                    "backoffMultiplier": 2,
                    # CANCELLED too: a server that shuts down may cancel a call it had accepted. Every
                    # digits call is idempotent, and a cancel by the caller itself is never retried.
                    "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"],
                },
            }
        ]
    return config


def channel_options(retries: int, backoff: float) -> tuple[tuple[str, object], ...]:
    """Options for grpc.aio.insecure_channel/secure_channel."""
    return (*BASE_OPTIONS, ("grpc.service_config", json.dumps(service_config(retries, backoff))))


def previous_attempts(trailing_metadata) -> int:
    """How many attempts gRPC made before the one whose status this is (0: no retry happened)."""
    for key, value in trailing_metadata or ():
        if key == "grpc-previous-rpc-attempts":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


__all__ = ["MAX_ATTEMPTS", "channel_options", "previous_attempts", "service_config"]
