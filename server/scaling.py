"""Server settings that only matter with several replicas behind one DNS name."""

from __future__ import annotations


def connection_age_options(max_age_s: float, grace_s: float) -> list[tuple[str, int]]:
    """gRPC server options that close each client connection after `max_age_s` (GOAWAY: calls in
    flight get `grace_s` to finish, new ones go to a fresh connection).

    A client resolves a DNS name only when it connects or loses a connection, so without this, pods
    added by the autoscaler would get no traffic from clients that were already connected."""
    if max_age_s <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", int(max_age_s * 1000)),
        ("grpc.max_connection_age_grace_ms", int(grace_s * 1000)),
    ]
