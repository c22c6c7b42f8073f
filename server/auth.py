"""Optional shared-token check (DIGITS_API_TOKEN) for deployments that expose the port.

Clients send `authorization: Bearer <token>`. Health and reflection stay open so probes and
grpcurl's `list` work without the secret. The token is never logged."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc
from digits.v1.errors import Reason, rich_status

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let everyone in")
        self._expected = f"Bearer {token}".encode()
        status = rich_status(grpc.StatusCode.UNAUTHENTICATED, Reason.UNAUTHENTICATED, "missing or wrong API token")

        async def reject(request, context: grpc.aio.ServicerContext):
            await context.abort_with_status(status)

        self._reject = grpc.unary_unary_rpc_method_handler(reject)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method.startswith(OPEN_PREFIXES):
            return await continuation(handler_call_details)
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._expected):
                    return await continuation(handler_call_details)
                break
        return self._reject
