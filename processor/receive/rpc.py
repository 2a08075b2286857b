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

A handler refuses by raising :class:`Refuse` (its own ``context.abort`` still
passes through unchanged, but keeps the request alive longer: see :func:`unary`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2

from processor import status
from processor.errors import InvalidInput
from processor.receive.auth import BearerToken

log = structlog.get_logger("processor.receive.rpc")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context: TypeAlias = grpc.aio.ServicerContext
Reject = Callable[[str], None]

_MAX_PROBLEMS_SHOWN = 20
HEALTH_SERVICE = "grpc.health.v1.Health"


class Refuse(Exception):
    """Raised by a handler to answer with ``code`` (instead of ``context.abort``)."""

    def __init__(
        self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, bytes], ...] = ()
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailers = trailers


@dataclass(frozen=True, slots=True)
class _Refusal:
    """The status a call ends with, as plain data (no exception, no frames kept)."""

    code: grpc.StatusCode
    details: str
    trailers: tuple[tuple[str, bytes], ...] = ()


def unary(
    decode: Callable[[bytes], Req],
    handle: Callable[[Req, Context], Awaitable[Resp]],
    *,
    what: str,
    serialize: Callable[[Resp], bytes] | None,
    auth: BearerToken | None = None,
    reject: Reject | None = None,
) -> grpc.RpcMethodHandler:
    """A unary-unary method taking raw bytes, with the mapping above.

    The call is aborted only after its request is no longer referenced: grpcio
    keeps an aborted call's exception, with its traceback, in a reference cycle
    until the garbage collector runs, and every frame in it would keep the
    request's bytes and decoded views alive (1.5 GB after a minute of refused
    3.9 MB requests).
    """

    async def method(raw: bytes, context: Context) -> Resp:
        outcome = await _outcome(raw, context, decode, handle, what, auth, reject)
        del raw
        if isinstance(outcome, _Refusal):
            await context.abort(outcome.code, outcome.details, trailing_metadata=outcome.trailers)
        return outcome  # type: ignore[return-value]

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
        outcome = await _outcome(raw, context, decode, handle, what, None, None)
        del raw
        if isinstance(outcome, _Refusal):
            await context.abort(outcome.code, outcome.details, trailing_metadata=outcome.trailers)

    return grpc.unary_stream_rpc_method_handler(
        method, request_deserializer=None, response_serializer=serialize
    )


def invalid_details(exc: InvalidInput) -> str:
    """The error text, listing at most the first few problems."""
    shown = "; ".join(str(p) for p in exc.problems[:_MAX_PROBLEMS_SHOWN])
    rest = len(exc.problems) - _MAX_PROBLEMS_SHOWN
    return f"{shown}; and {rest} more" if rest > 0 else shown


async def _outcome(
    raw: bytes,
    context: Context,
    decode: Callable[[bytes], Req],
    handle: Callable[[Req, Context], Awaitable[Resp]],
    what: str,
    auth: BearerToken | None,
    reject: Reject | None,
) -> Resp | _Refusal:
    """The handler's response, or the refusal the call ends with (see the module)."""
    if auth is not None and not auth.allows_metadata(context.invocation_metadata()):
        return _refused(reject, "unauthenticated", status.UNAUTHENTICATED.grpc, _NO_TOKEN)
    try:
        return await handle(decode(raw), context)
    except Refuse as exc:
        return _Refusal(exc.code, exc.details, exc.trailers)
    except InvalidInput as exc:
        return _refused(reject, "invalid", status.of(exc).grpc, invalid_details(exc))
    except DecodeError as exc:
        return _refused(reject, "invalid", status.of(exc).grpc, f"payload is not {what}: {exc}")
    except grpc.aio.AbortError:
        raise  # the handler set its own status
    except Exception as exc:
        log.error("rpc_failed", rpc=what, error=type(exc).__name__)
        return _refused(reject, "error", status.INTERNAL.grpc, "internal error")


def _refused(reject: Reject | None, reason: str, code: grpc.StatusCode, details: str) -> _Refusal:
    if reject is not None:
        reject(reason)
    return _Refusal(code, details)


_NO_TOKEN = "missing or invalid bearer token"


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
