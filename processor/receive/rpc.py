"""The one way every gRPC method here turns a client's mistake into a status.

grpcio decodes a request with the method's registered deserializer before the
handler runs, and answers UNKNOWN ("Unexpected DecodeError") to bytes that do not
decode: the client made the mistake, yet it hears the code for a server bug, and
retries. So every method is registered here with raw bytes, and this wrapper:

- checks the bearer token first, when the method has one (UNAUTHENTICATED), so an
  unauthenticated sender learns nothing about its payload;
- decodes, mapping ``DecodeError`` (here or raised by the handler, which may
  decode later itself) to INVALID_ARGUMENT "payload is not a <type>";
- maps ``InvalidInput`` raised by the handler to INVALID_ARGUMENT with its
  problems (at most a few: trailers over 16 KiB reach clients as
  RESOURCE_EXHAUSTED, hiding the real error);
- maps any other exception to INTERNAL, logged, never echoing the payload.

Statuses a handler sets on purpose (``context.abort``) pass through unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2

from processor.errors import InvalidInput
from processor.security import ReceiverAuth

log = structlog.get_logger("processor.receive.rpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context: TypeAlias = grpc.aio.ServicerContext
Reject = Callable[[str], None]

_MAX_PROBLEMS_SHOWN = 20
HEALTH_SERVICE = "grpc.health.v1.Health"


def unary(
    decode: Callable[[bytes], Req],
    handle: Callable[[Req, Context], Awaitable[Resp]],
    *,
    what: str,
    serialize: Callable[[Resp], bytes] | None,
    auth: ReceiverAuth | None = None,
    reject: Reject | None = None,
) -> grpc.RpcMethodHandler:
    """A unary-unary method taking raw bytes, with the mapping above."""

    async def method(raw: bytes, context: Context) -> Resp:
        request = await _admit(raw, context, decode, what, auth, reject)
        try:
            return await handle(request, context)
        except Exception as exc:
            await _fail(exc, context, what, reject)
            raise  # _fail aborts; this is never reached

    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=None, response_serializer=serialize
    )


def unary_stream(
    decode: Callable[[bytes], Req],
    handle: Callable[[Req, Context], Awaitable[None]],
    *,
    what: str,
    serialize: Callable[[Any], bytes],
) -> grpc.RpcMethodHandler:
    """A unary-stream method whose handler writes with ``context.write``."""

    async def method(raw: bytes, context: Context) -> None:
        request = await _admit(raw, context, decode, what, None, None)
        try:
            await handle(request, context)
        except Exception as exc:
            await _fail(exc, context, what, None)

    return grpc.unary_stream_rpc_method_handler(
        method, request_deserializer=None, response_serializer=serialize
    )


def invalid_details(exc: InvalidInput) -> str:
    """The error text, listing at most the first few problems."""
    shown = "; ".join(str(p) for p in exc.problems[:_MAX_PROBLEMS_SHOWN])
    rest = len(exc.problems) - _MAX_PROBLEMS_SHOWN
    return f"{shown}; and {rest} more" if rest > 0 else shown


async def _admit(
    raw: bytes,
    context: Context,
    decode: Callable[[bytes], Req],
    what: str,
    auth: ReceiverAuth | None,
    reject: Reject | None,
) -> Req:
    if auth is not None and not auth.allows(context.invocation_metadata()):
        if reject is not None:
            reject("unauthenticated")
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
    try:
        return decode(raw)
    except DecodeError as exc:
        if reject is not None:
            reject("invalid")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"payload is not {what}: {exc}")
        raise  # abort raises; this keeps the type checker informed


async def _fail(exc: Exception, context: Context, what: str, reject: Reject | None) -> None:
    """Abort the call for ``exc`` (re-raising an abort the handler made itself)."""
    if isinstance(exc, grpc.aio.AbortError | asyncio.CancelledError):
        raise exc
    if isinstance(exc, InvalidInput):
        if reject is not None:
            reject("invalid")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, invalid_details(exc))
    if isinstance(exc, DecodeError):  # decoded by the handler itself
        if reject is not None:
            reject("invalid")
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"payload is not {what}: {exc}")
    log.error("rpc_failed", rpc=what, error=type(exc).__name__)
    if reject is not None:
        reject("error")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def health_handler(servicer: health.aio.HealthServicer) -> grpc.GenericRpcHandler:
    """grpc.health.v1.Health (Check and Watch) served through this module's mapping."""
    decode = health_pb2.HealthCheckRequest.FromString
    encode = health_pb2.HealthCheckResponse.SerializeToString
    return grpc.method_handlers_generic_handler(
        HEALTH_SERVICE,
        {
            "Check": unary(decode, servicer.Check, what="a HealthCheckRequest", serialize=encode),
            "Watch": unary_stream(
                decode, servicer.Watch, what="a HealthCheckRequest", serialize=encode
            ),
        },
    )
