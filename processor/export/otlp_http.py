"""Send link of the export chain: OTLP/HTTP ``POST /v1/traces`` (binary protobuf) over aiohttp.

Failures are classified per the OTLP spec ("OTLP/HTTP", "Failures"): 429, 502,
503 and 504 are retryable and their ``Retry-After`` (seconds or an HTTP date) is
the minimum delay; every other status (400, 401, 403, 404, 413, 415, 500, ...)
is permanent. A connection that fails or times out is retryable. Codes are
``HTTP_<status>``, ``UNAVAILABLE`` (no answer) and ``DEADLINE_EXCEEDED`` (timeout).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import aiohttp
import structlog
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from processor.export.classify import SHUTDOWN_CODE, ExportFailed
from processor.export.client_tls import client_context
from processor.export.compress import gzip_body
from processor.export.config import ExporterConfig
from processor.export.otlp_grpc import PartialSuccessHook

__all__ = ["RETRYABLE_STATUSES", "OtlpHttpSender", "parse_retry_after"]

_log = structlog.get_logger(__name__)

# OTLP spec, OTLP/HTTP "Failures": the statuses a client SHOULD retry.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})

PROTOBUF = "application/x-protobuf"
_USER_AGENT = "otel-user-enricher"
# A response body is an ExportTraceServiceResponse or a Status: small. Read no more.
_MAX_RESPONSE_BYTES = 64 * 1024


def export_url(settings: ExporterConfig) -> str:
    """The URL requests are POSTed to."""
    scheme = "http" if settings.insecure else "https"
    return f"{scheme}://{settings.endpoint}{settings.http_path}"


class OtlpHttpSender:
    """Sender POSTing serialized ``ExportTraceServiceRequest`` bytes over one aiohttp session.

    ``send`` raises :class:`ExportFailed` (a DownstreamError) classified per the OTLP
    spec. Spans the server rejects in a partial success are not an error: they are
    logged (``export_partial_success``), added to :attr:`rejected_spans_total` and
    passed to ``on_partial_success``. ``clock`` (Unix seconds) dates ``Retry-After``.
    """

    def __init__(
        self,
        settings: ExporterConfig,
        *,
        on_partial_success: PartialSuccessHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._url = export_url(settings)
        self._on_partial_success = on_partial_success
        self._clock = clock
        headers = {"Content-Type": PROTOBUF, "User-Agent": _USER_AGENT}
        if settings.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        headers.update(settings.headers)
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None
        self._rejected_spans_total = 0

    @property
    def rejected_spans_total(self) -> int:
        """Spans the server rejected in partial successes since construction."""
        return self._rejected_spans_total

    async def start(self) -> None:
        """Open the session; raises ConfigError if ``ca_file`` cannot be read."""
        if self._session is not None:
            return
        context = await client_context(self._settings)
        connector = aiohttp.TCPConnector(ssl=context if context is not None else True)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)

    async def send(self, payload: bytes) -> None:
        """Export one serialized request; raise ExportFailed on any failure."""
        session = self._session
        if session is None:
            raise ExportFailed("exporter is not running", code=SHUTDOWN_CODE, retryable=False)
        body = await self._compressed(payload)
        timeout = aiohttp.ClientTimeout(total=self._settings.timeout)
        try:
            async with session.post(
                self._url,
                data=body,
                headers=self._headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                answer = await _read_bounded(response)
                status, headers = response.status, response.headers
                content_type = response.content_type
        except TimeoutError as err:
            raise ExportFailed(
                f"OTLP/HTTP export timed out after {self._settings.timeout:g}s",
                code="DEADLINE_EXCEEDED",
                retryable=True,
            ) from err
        except aiohttp.ClientError as err:
            raise ExportFailed(
                f"OTLP/HTTP export failed: {type(err).__name__}: {err}",
                code="UNAVAILABLE",
                retryable=True,
            ) from err
        if 200 <= status < 300:
            self._note_partial_success(answer, content_type)
            return
        raise self._failed(status, headers.get("Retry-After"), answer, content_type)

    async def shutdown(self) -> None:
        """Close the session (in-flight requests fail)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _compressed(self, payload: bytes) -> bytes:
        if self._settings.compression != "gzip":
            return payload
        return await gzip_body(payload)

    def _failed(
        self, status: int, retry_after: str | None, answer: bytes, content_type: str
    ) -> ExportFailed:
        """Classify a non-2xx answer per the OTLP/HTTP spec."""
        retryable = status in RETRYABLE_STATUSES
        min_delay = parse_retry_after(retry_after, self._clock()) if retryable else None
        detail = _status_message(answer, content_type)
        return ExportFailed(
            f"OTLP/HTTP export failed: HTTP {status}" + (f": {detail}" if detail else ""),
            code=f"HTTP_{status}",
            retryable=retryable,
            min_delay=min_delay,
        )

    def _note_partial_success(self, answer: bytes, content_type: str) -> None:
        """Log and count spans rejected in a partial success (not retried, per the spec)."""
        response = _decode_response(answer, content_type)
        if response is None:
            return
        rejected = int(response.partial_success.rejected_spans)
        if rejected <= 0:
            return
        message = str(response.partial_success.error_message)
        self._rejected_spans_total += rejected
        _log.warning("export_partial_success", rejected_spans=rejected, error_message=message)
        if self._on_partial_success is not None:
            self._on_partial_success(rejected, message)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        seconds = float(text)  # not RFC 9110, but some servers send "1.5"
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP-date is always GMT; anything else is not one
    return max(when.timestamp() - now, 0.0)


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    """At most ``_MAX_RESPONSE_BYTES`` of the body (the rest is not needed)."""
    chunks = bytearray()
    async for chunk in response.content.iter_chunked(16 * 1024):
        chunks += chunk
        if len(chunks) >= _MAX_RESPONSE_BYTES:
            break
    return bytes(chunks[:_MAX_RESPONSE_BYTES])


def _decode_response(answer: bytes, content_type: str) -> ExportTraceServiceResponse | None:
    """The 200 body as an ExportTraceServiceResponse (protobuf or JSON), None if unreadable."""
    response = ExportTraceServiceResponse()
    try:
        if content_type == "application/json":
            json_format.Parse(answer or b"{}", response, ignore_unknown_fields=True)
        else:
            response.ParseFromString(answer)
    except (DecodeError, json_format.ParseError, ValueError):
        _log.debug("export_response_undecodable", content_type=content_type, size=len(answer))
        return None
    return response


def _status_message(answer: bytes, content_type: str) -> str:
    """The message of an error body (a google.rpc.Status, or text), shortened."""
    if not answer:
        return ""
    status = status_pb2.Status()
    try:
        if content_type == "application/json":
            data = json.loads(answer)
            message = data.get("message") if isinstance(data, dict) else None
            return str(message)[:300] if message else answer.decode("utf-8", "replace")[:300]
        if content_type == PROTOBUF or content_type == "application/protobuf":
            status.ParseFromString(answer)
            return str(status.message)[:300]
    except (DecodeError, ValueError):
        pass
    return answer.decode("utf-8", "replace")[:300]
