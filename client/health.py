"""The standard gRPC health check, asked once: the launcher waits on it, and so do the tests'
server processes. (grpc_health is the standard health contract, not the server's code.)"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def health_status(
    target: str, service: str = "", timeout: float = 1.0, credentials: grpc.ChannelCredentials | None = None
) -> str:
    """The server's health status name (SERVING, NOT_SERVING, ...), or UNREACHABLE when it gives none
    (down, not listening yet, or an unknown `service`)."""
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
