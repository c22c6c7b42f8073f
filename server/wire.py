"""The service's requests off the wire, parsed so that bad bytes are the caller's error, not ours.

gRPC's own deserialization raises inside the framework: the caller gets UNKNOWN with no reason and
the server logs an ERROR with a full traceback for every such message, so anyone could fill the
log. Here each method's deserializer never raises: unparsable bytes become a `Malformed` request
that the servicer answers with INVALID_ARGUMENT / BAD_REQUEST, and `BadRequestLog` writes at most one
WARNING line per client address per minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc
from digits.v1 import digits_pb2
from google.protobuf.message import DecodeError, Message

log = logging.getLogger(__name__)

SERVICE = digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"]


class Malformed:
    """Stands in for a request whose bytes did not parse as `expected`."""

    __slots__ = ("error", "expected", "size")

    def __init__(self, expected: str, size: int, error: str) -> None:
        self.expected, self.size, self.error = expected, size, error


def tolerant(message_type: type[Message]) -> Callable[[bytes], Message | Malformed]:
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_type.FromString(data)
        except (DecodeError, ValueError, TypeError, RuntimeError) as exc:  # upb raises DecodeError; be broad
            return Malformed(name, len(data), str(exc) or type(exc).__name__)

    return parse


def add_service(servicer: object, server: grpc.aio.Server) -> None:
    """Register the DigitClassifier methods like the generated `add_DigitClassifierServicer_to_server`,
    but with deserializers that never raise. Every method of the service is covered, new ones too."""
    handlers = {}
    for method in SERVICE.methods:
        request = getattr(digits_pb2, method.input_type.name)
        response = getattr(digits_pb2, method.output_type.name)
        if method.client_streaming and method.server_streaming:  # PredictStream: each message parsed alike
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                getattr(servicer, method.name),
                request_deserializer=tolerant(request),
                response_serializer=response.SerializeToString,
            )
            continue
        if method.client_streaming or method.server_streaming:
            raise TypeError(f"{method.full_name}: only unary and bidirectional methods are registered here")
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=tolerant(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


def client_address(peer: str) -> str:
    """The address part of a gRPC peer ("ipv4:1.2.3.4:5678" -> "ipv4:1.2.3.4"): one client, any port."""
    head, sep, port = peer.rpartition(":")
    return head if sep and port.isdigit() else peer


class BadRequestLog:
    """At most one WARNING per client address per `interval` seconds; remembers at most `max_clients`."""

    def __init__(self, interval: float = 60.0, max_clients: int = 10_000) -> None:
        self.interval = interval
        self.max_clients = max_clients
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, peer: str, method: str, request: Malformed) -> None:
        now = time.monotonic()
        client = client_address(peer)
        last = self._last.get(client)
        if last is not None and now - last < self.interval:
            self._suppressed[client] = self._suppressed.get(client, 0) + 1
            return
        if len(self._last) >= self.max_clients:  # forget the quiet ones first
            cutoff = now - self.interval
            for key in [k for k, t in self._last.items() if t < cutoff] or list(self._last)[: self.max_clients // 2]:
                self._last.pop(key, None)
                self._suppressed.pop(key, None)
        self._last[client] = now
        more = self._suppressed.pop(client, 0)
        log.warning(
            "unparsable %s from %s (%d bytes, %s): answered INVALID_ARGUMENT/BAD_REQUEST%s",
            method,
            client,
            request.size,
            request.error[:200],
            f" ({more} more from it since its last warning)" if more else "",
        )
