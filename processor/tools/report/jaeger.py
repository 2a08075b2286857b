"""Jaeger's query APIs over HTTP (aiohttp, async): API v3 and the legacy ``/api/traces``.

:func:`connect` picks the API (``auto`` probes ``/api/v3/services``: a JSON answer
means v3, a 404 or a non-JSON page means the route is missing, so the legacy API).
:func:`fetch_spans` queries a range window by window, halving a window whose page
came back full, and keeps each span once by (trace id, span id).

Every failure is a :class:`JaegerError` whose message fits on one line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import aiohttp
from yarl import URL

from processor.tools.report.progress import Progress
from processor.tools.report.spans import (
    NotJSON,
    Page,
    ResponseError,
    SpanRecord,
    load_json,
    parse_legacy,
    parse_v3,
)
from processor.tools.report.timerange import TimeRange, format_rfc3339

__all__ = [
    "CONCURRENCY",
    "MIN_WINDOW_US",
    "ApiMode",
    "Connection",
    "Fetched",
    "JaegerError",
    "JaegerHttp",
    "LegacyClient",
    "Query",
    "TraceClient",
    "V3Client",
    "connect",
    "fetch_spans",
    "shown_url",
]

ApiMode = Literal["auto", "v3", "legacy"]

V3_SERVICES = "/api/v3/services"
V3_TRACES = "/api/v3/traces"
LEGACY_TRACES = "/api/traces"
MIN_WINDOW_US = 1_000_000  # a page still full at one second is accepted as it is
CONCURRENCY = 4  # windows queried at once
_DETAIL_CHARS = 200
_ERRNO = re.compile(r"\[Errno (\d+)\]")


class JaegerError(Exception):
    """Jaeger could not be queried; the message is one line meant for the user."""


@dataclass(frozen=True, slots=True)
class Query:
    """What to ask for: the service, exact attribute values, and traces per page."""

    service: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    limit: int = 500


class JaegerHttp:
    """GET requests to one Jaeger query service, failures turned into JaegerError."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self.shown_url = shown_url(self.base_url)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """The status and body of ``GET path``."""
        try:
            async with self._session.get(
                self.base_url + path, params=params, timeout=self._timeout
            ) as response:
                return response.status, await response.read()
        except aiohttp.ClientConnectorDNSError:
            raise self._unreachable("cannot resolve the host name") from None
        except aiohttp.ClientConnectorError as exc:
            raise self._unreachable(_connect_reason(exc)) from None
        except TimeoutError:
            raise self._unreachable(f"no answer within {self._timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            reason = str(exc) or type(exc).__name__
            raise JaegerError(f"request to Jaeger at {self.shown_url} failed: {reason}") from None

    def status_error(self, path: str, status: int, body: bytes) -> JaegerError:
        """The error for an unexpected HTTP status."""
        detail = _detail(body)
        message = f"Jaeger at {self.shown_url} answered HTTP {status} to GET {path}"
        return JaegerError(f"{message}: {detail}" if detail else message)

    def response_error(self, path: str, exc: ResponseError) -> JaegerError:
        """The error for a body that is not the JSON the API documents."""
        what = "invalid JSON" if isinstance(exc, NotJSON) else "unexpected JSON"
        return JaegerError(f"{what} from Jaeger at {self.shown_url} (GET {path}): {exc}")

    def _unreachable(self, reason: str) -> JaegerError:
        return JaegerError(f"cannot reach Jaeger at {self.shown_url}: {reason}")


class TraceClient(Protocol):
    """One of Jaeger's trace search APIs."""

    api: str

    async def find(self, window: TimeRange, query: Query) -> Page:
        """The spans of the traces matching ``query`` in ``window``."""
        ...


class V3Client:
    """``GET /api/v3/traces``: RFC 3339 times, OTLP/JSON answers, 404 when nothing matches."""

    api = "v3"

    def __init__(self, http: JaegerHttp) -> None:
        self._http = http

    async def find(self, window: TimeRange, query: Query) -> Page:
        """The spans of the traces matching ``query`` in ``window``."""
        params = {
            # The snake_case names work on every release with API v3.
            "query.service_name": query.service,
            "query.start_time_min": format_rfc3339(window.start_us),
            "query.start_time_max": format_rfc3339(window.end_us),
            "query.num_traces": str(query.limit),
            "query.search_depth": str(query.limit),
        }
        if query.attributes:
            params["query.attributes"] = json.dumps(dict(query.attributes))
        status, body = await self._http.get(V3_TRACES, params)
        if status == 404:
            if _is_json_error(body):  # "No traces found"
                return Page([], 0)
            raise JaegerError(
                f"Jaeger at {self._http.shown_url} has no {V3_TRACES} (HTTP 404); try --api legacy"
            )
        if status != 200:
            raise self._http.status_error(V3_TRACES, status, body)
        try:
            return parse_v3(body)
        except ResponseError as exc:
            raise self._http.response_error(V3_TRACES, exc) from None


class LegacyClient:
    """``GET /api/traces``: microsecond times, Jaeger's own JSON, ``tags`` as a JSON map."""

    api = "legacy"

    def __init__(self, http: JaegerHttp) -> None:
        self._http = http

    async def find(self, window: TimeRange, query: Query) -> Page:
        """The spans of the traces matching ``query`` in ``window``."""
        params = {
            "service": query.service,
            "start": str(window.start_us),
            "end": str(window.end_us),
            "limit": str(query.limit),
        }
        if query.attributes:
            params["tags"] = json.dumps(dict(query.attributes))
        status, body = await self._http.get(LEGACY_TRACES, params)
        if status == 404 and not _is_json_error(body):
            raise JaegerError(
                f"Jaeger at {self._http.shown_url} has no {LEGACY_TRACES} (HTTP 404); try --api v3"
            )
        if status != 200:
            raise self._http.status_error(LEGACY_TRACES, status, body)
        try:
            return parse_legacy(body)
        except ResponseError as exc:
            raise self._http.response_error(LEGACY_TRACES, exc) from None


@dataclass(frozen=True, slots=True)
class Connection:
    """The API chosen, and the services Jaeger knows (None when not asked)."""

    client: TraceClient
    services: tuple[str, ...] | None


async def connect(http: JaegerHttp, mode: ApiMode) -> Connection:
    """The client for ``mode``; ``auto`` probes ``/api/v3/services`` first."""
    if mode == "legacy":
        return Connection(LegacyClient(http), None)
    status, body = await http.get(V3_SERVICES)
    if status == 200:
        try:
            services = _services(load_json(body))
        except NotJSON:  # e.g. the UI's index.html served for an unknown path
            services = None
        if services is not None:
            return Connection(V3Client(http), services)
    elif status not in (404, 405):
        raise http.status_error(V3_SERVICES, status, body)
    if mode == "v3":
        raise JaegerError(
            f"Jaeger at {http.shown_url} has no API v3 ({V3_SERVICES} answered HTTP {status}"
            f"{'' if status != 200 else ' without JSON'}); try --api legacy"
        )
    return Connection(LegacyClient(http), None)


@dataclass(frozen=True, slots=True)
class Fetched:
    """Every distinct span of the range, and how many windows hit the limit anyway."""

    spans: list[SpanRecord]
    windows: int
    saturated: int  # windows still full at MIN_WINDOW_US: spans may be missing there


async def fetch_spans(
    client: TraceClient,
    windows: Iterable[TimeRange],
    query: Query,
    progress: Progress,
    *,
    concurrency: int = CONCURRENCY,
) -> Fetched:
    """Query each window (a few at once), halving windows whose page came back full."""
    pending = deque(windows)
    total, done, saturated = len(pending), 0, 0
    seen: dict[tuple[str, str], SpanRecord] = {}
    while pending:
        batch = [pending.popleft() for _ in range(min(concurrency, len(pending)))]
        pages = await _find_all(client, batch, query)
        for window, page in zip(batch, pages, strict=True):
            for span in page.spans:
                seen.setdefault(span.key, span)
            full = page.traces >= query.limit
            if full and window.length_us > MIN_WINDOW_US:
                first, second = window.halves()
                pending.extendleft((second, first))
                total += 1  # one window became two
                continue
            saturated += full
            done += 1
            progress.update(done, total, len(seen))
    return Fetched(list(seen.values()), total, saturated)


async def _find_all(client: TraceClient, batch: Sequence[TimeRange], query: Query) -> list[Page]:
    """The pages of ``batch``, queried concurrently; the first failure is raised."""
    results = await asyncio.gather(
        *(client.find(window, query) for window in batch), return_exceptions=True
    )
    pages: list[Page] = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        pages.append(result)
    return pages


def shown_url(url: str) -> str:
    """``url`` without a user name and password, for messages and output."""
    try:
        return str(URL(url).with_user(None))
    except ValueError:
        return url


def _services(document: Any) -> tuple[str, ...] | None:
    """The service names of a ``/api/v3/services`` answer, None when it is not one."""
    if not isinstance(document, dict):
        return None
    services = document.get("services", [])  # an empty list is left out of the JSON
    if not isinstance(services, list):
        return None
    return tuple(str(name) for name in services)


def _is_json_error(body: bytes) -> bool:
    """True for Jaeger's JSON error bodies (as opposed to a router's plain 404 page)."""
    try:
        document = load_json(body)
    except NotJSON:
        return False
    return isinstance(document, dict) and ("error" in document or "errors" in document)


def _detail(body: bytes) -> str:
    """A short, one-line reason from an error body (Jaeger's JSON message, else the text)."""
    try:
        document = load_json(body)
    except NotJSON:
        document = None
    text = ""
    if isinstance(document, dict):
        error, errors = document.get("error"), document.get("errors")
        if isinstance(error, dict):
            text = str(error.get("message", ""))
        elif isinstance(errors, list) and errors and isinstance(errors[0], dict):
            text = str(errors[0].get("msg", ""))
    if not text:
        text = body.decode("utf-8", "replace").strip()
        if text.startswith("<"):  # an HTML error page says nothing useful on one line
            text = ""
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _connect_reason(exc: aiohttp.ClientConnectorError) -> str:
    """``connection refused`` and the like, from the OS error behind a failed connect."""
    error = exc.os_error
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS failed: {' '.join(str(error).split())}"
    if error.errno is not None:
        return _strerror(error.errno)
    # Both addresses of "localhost" failed: "Multiple exceptions: [Errno 111] ..., [Errno 111] ..."
    numbers = set(_ERRNO.findall(str(error)))
    if len(numbers) == 1:
        return _strerror(int(numbers.pop()))
    return " ".join(str(error).split()) or "connection failed"


def _strerror(number: int) -> str:
    reason = os.strerror(number)
    return reason[:1].lower() + reason[1:]
