"""OTLP/HTTP trace receiver: ``POST /v1/traces`` with protobuf or JSON bodies.

Answers follow the OTLP spec ("OTLP/HTTP"):

- 200 with an ``ExportTraceServiceResponse`` in the request's encoding;
- 400 for a body that does not decode, with a ``google.rpc.Status`` (plus a
  ``BadRequest`` detail naming the field) in the request's encoding;
- 401 without the configured bearer token, 413 past ``max_message_bytes`` (before
  or after decompression), 415 for other content types or content codings;
- 429 with ``Retry-After`` when the export queue (or spool) is full, or the
  bytes all requests in flight hold would pass the in-flight budget
  (``processor.receive.budget``; checked from ``Content-Length`` before the body
  is read).

Why 429 and not 503 for a full queue: the spec allows either, and every OTLP
client retries both and honours ``Retry-After``. 429 is the HTTP mapping of the
gRPC receiver's RESOURCE_EXHAUSTED (as in the Collector's receiver), so both
transports report the same condition, and it stays distinguishable from the 503
a proxy or load balancer sends when the enricher itself is unreachable.

aiohttp must not decompress request bodies itself (it would drop the connection
on corrupt gzip and bound only the decompressed size): serve the app with
:func:`build_runner`, or an ``AppRunner`` given ``auto_decompress=False``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from processor import status
from processor.errors import Backpressure
from processor.metrics import Metrics
from processor.receive.auth import BearerToken
from processor.receive.body import (
    CODINGS,
    DECODERS,
    IDENTITY,
    Bigger,
    Encoding,
    Rejected,
    decode_body,
    too_large,
)
from processor.receive.budget import InflightBudget
from processor.receive.otlp_json import encode_json_response, encode_json_status
from processor.wire.received import Received

__all__ = [
    "JSON",
    "PROTOBUF",
    "ROUTE",
    "HttpTraceReceiver",
    "TracePipeline",
    "build_app",
    "build_runner",
]

log = structlog.get_logger("processor.receive.http_trace")

ROUTE = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf"})
# Bodies larger than this are decompressed and decoded in a worker thread so a
# big request does not stall the event loop (and every other connection).
OFFLOAD_BYTES = 256 * 1024
# In-flight bytes a body without Content-Length holds while it is being read.
UNKNOWN_LENGTH_RESERVE = 1024 * 1024


class TracePipeline(Protocol):
    """What the receiver hands requests to (``processor.pipeline.Pipeline``)."""

    def admit(self, raw: bytes) -> Received:
        """Read the request's bytes; raises ``DecodeError`` when they are not one."""
        ...

    async def accept(self, received: Received) -> int:
        """Take the request; returns its span count, raises Backpressure when full."""
        ...


class HttpTraceReceiver:
    """Handles ``POST /v1/traces``; mount it with :func:`build_app`."""

    def __init__(
        self,
        pipeline: TracePipeline,
        metrics: Metrics,
        *,
        max_message_bytes: int,
        auth: BearerToken | None = None,
        offload_bytes: int = OFFLOAD_BYTES,
        budget: InflightBudget | None = None,
    ) -> None:
        # Without a budget (tests of the receiver alone) nothing is ever refused for it.
        self._budget = budget or InflightBudget(1 << 62, 1.0)
        self._pipeline = pipeline
        self._metrics = metrics
        self._auth = auth
        self._offload_bytes = offload_bytes
        self.max_message_bytes = max_message_bytes

    async def export(self, request: web.Request) -> web.Response:
        """Accept one Export request into the pipeline; answer once it is queued (and spooled)."""
        encoding = _encoding_of(request.content_type)
        try:
            self._check(request, encoding)
            assert encoding is not None  # _check refuses other content types
            # What the body will take before it is read: its declared length. A body
            # without one (chunked) holds a small share and the rest once read, so that
            # it does not take the whole budget from everyone else while it arrives.
            expected = request.content_length or UNKNOWN_LENGTH_RESERVE
            with self._budget.holding(expected) as held:
                body = await self._read(request)
                if len(body) > expected:
                    held.grow(len(body) - expected)
                raw = await self._decode(body, encoding, _coding_of(request))
                if raw is not body:  # decompressed or converted from JSON: held too
                    held.grow(len(raw))
                del body
                spans = await self._pipeline.accept(self._admit(raw))
        except Rejected as exc:
            self._outcome(exc.outcome)
            return _status_response(exc, encoding or "json")
        except Backpressure as exc:
            self._outcome("backpressure")
            return _backpressure_response(exc, encoding or "json")
        except Exception:
            self._outcome("error")
            log.exception("otlp_http_failed", path=request.path)
            failure = Rejected(status.INTERNAL, "internal error", "error")
            return _status_response(failure, encoding or "json")
        self._outcome("ok" if spans else "empty")
        return _ok_response(encoding)

    def _check(self, request: web.Request, encoding: Encoding | None) -> None:
        """The checks that need no body: token, content type and coding, declared length."""
        if self._auth is not None and not self._auth.allows_metadata(list(request.headers.items())):
            raise Rejected(
                status.UNAUTHENTICATED, "missing or invalid bearer token", "unauthenticated"
            )
        if encoding is None:
            raise Rejected(
                status.UNSUPPORTED,
                f"unsupported Content-Type {request.content_type!r}; use {PROTOBUF} or {JSON}",
                "unsupported",
            )
        coding = _coding_of(request)
        if coding not in IDENTITY and coding not in CODINGS:
            raise Rejected(
                status.UNSUPPORTED,
                f"unsupported Content-Encoding {coding!r}; use gzip, deflate or none",
                "unsupported",
            )
        length = request.content_length
        if length is not None and length > self.max_message_bytes:
            raise too_large(self.max_message_bytes)

    async def _read(self, request: web.Request) -> bytes:
        """The (still encoded) body."""
        limit = self.max_message_bytes
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large(limit) from None
        except (web.RequestPayloadError, HttpProcessingError, ConnectionError) as exc:
            # The sender went away mid-body, or sent a malformed one: not our failure.
            raise Rejected(status.INVALID, f"incomplete request body: {exc}", "invalid") from None

    async def _decode(self, body: bytes, encoding: Encoding, coding: str) -> bytes:
        """Decompress (and decode JSON), in a worker thread when the work is large.

        A small compressed body can inflate to ``max_message_bytes``: it is
        inflated inline only up to ``4 x offload_bytes`` of output, and started
        again in a worker thread past that, so that a few kilobytes of zeros
        cannot hold the event loop (and every other sender) for a quarter second.
        """
        limit = self.max_message_bytes
        if len(body) <= self._offload_bytes:
            try:
                return decode_body(body, encoding, coding, limit, inline=4 * self._offload_bytes)
            except Bigger:
                pass
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            DECODERS, decode_body, body, encoding, coding, limit, None
        )

    def _admit(self, raw: bytes) -> Received:
        try:
            return self._pipeline.admit(raw)
        except DecodeError as exc:
            raise Rejected(
                status.INVALID,
                f"payload is not an ExportTraceServiceRequest: {exc}",
                "invalid",
            ) from None

    def _outcome(self, outcome: str) -> None:
        self._metrics.requests_received.add((outcome,))


def build_app(receiver: HttpTraceReceiver) -> web.Application:
    """An aiohttp application serving ``POST /v1/traces`` (bodies up to max_message_bytes)."""
    app = web.Application(client_max_size=receiver.max_message_bytes)
    app.router.add_post(ROUTE, receiver.export)
    return app


def build_runner(
    receiver: HttpTraceReceiver,
    *,
    shutdown_timeout: float = 10.0,
    keepalive_timeout: float = 75.0,
) -> web.AppRunner:
    """The runner to serve :func:`build_app` with (aiohttp's own decompression off).

    ``shutdown_timeout`` bounds how long ``cleanup()`` waits for requests in flight;
    ``keepalive_timeout`` closes connections idle between requests.
    """
    return web.AppRunner(
        build_app(receiver),
        access_log=None,
        handle_signals=False,
        auto_decompress=False,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=keepalive_timeout,
    )


# --------------------------------------------------------------------------- decoding


def _encoding_of(content_type: str) -> Encoding | None:
    if content_type in _PROTOBUF_TYPES:
        return "protobuf"
    if content_type == JSON:
        return "json"
    return None


def _coding_of(request: web.Request) -> str:
    """The request's content coding, or "" when aiohttp already decoded the body."""
    if getattr(request.content, "total_compressed_bytes", None) is not None:
        return ""  # served with auto_decompress=True: the body arrives decompressed
    return request.headers.get("Content-Encoding", "").strip().lower()


# --------------------------------------------------------------------------- responses


def _ok_response(encoding: Encoding) -> web.Response:
    response = ExportTraceServiceResponse()
    if encoding == "json":
        return web.Response(body=encode_json_response(response), content_type=JSON)
    return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)


def _status_response(rejected: Rejected, encoding: Encoding) -> web.Response:
    body = status_pb2.Status(code=rejected.status.code, message=rejected.message)
    if rejected.problems:
        bad = error_details_pb2.BadRequest()
        for problem in rejected.problems:
            bad.field_violations.add(field=problem.path, description=problem.message)
        body.details.add().Pack(bad)
    response = _encoded(body, rejected.status.http, encoding)
    if rejected.status == status.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="user-enricher"'
    return response


def _backpressure_response(exc: Backpressure, encoding: Encoding) -> web.Response:
    seconds = status.retry_after(exc.retry_after_s)
    delay = Duration()
    delay.FromSeconds(int(seconds))
    answer = status.of(exc)
    body = status_pb2.Status(code=answer.code, message=str(exc))
    body.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    response = _encoded(body, answer.http, encoding)
    response.headers["Retry-After"] = seconds
    return response


def _encoded(status: Any, http_status: int, encoding: Encoding) -> web.Response:
    if encoding == "json":
        return web.Response(status=http_status, body=encode_json_status(status), content_type=JSON)
    return web.Response(status=http_status, body=status.SerializeToString(), content_type=PROTOBUF)
