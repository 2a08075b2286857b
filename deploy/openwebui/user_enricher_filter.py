"""
title: User Enricher
author: otel-user-enricher
version: 0.1.0
description: Reports which user sent each LLM request to otel-user-enricher, so gateway spans get the user.
requirements:
"""  # noqa: E501 (Open WebUI reads one "key: value" per line)

# An Open WebUI Filter function: one self-contained file, standard library only
# (plus opentelemetry when Open WebUI has it). Install it under Admin Panel ->
# Functions; see README.md next to this file.

import asyncio
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

log = logging.getLogger("user_enricher_filter")

MAX_TEXT_BYTES = 256  # the session API rejects longer strings
MAX_PENDING = 512  # pushes waiting or in flight; beyond this new ones are dropped
WORKERS = 4  # threads doing the HTTP posts (never the event loop, never the shared pool)
WARN_EVERY_S = 60.0  # at most one failure warning per minute; the rest go to DEBUG
ERROR_BODY_CHARS = 200  # how much of an error response to quote in the log
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")  # the service's own (loose) check
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SESSIONS_PATH = "/v1/sessions"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a redirect would carry the bearer token to another URL."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> None:
        """Return None so urllib raises HTTPError for the 3xx instead of following it."""
        return None


# Direct connections only: no *_PROXY environment variables, no redirects.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def _clip(value: object) -> str:
    """``value`` as text of at most MAX_TEXT_BYTES UTF-8 bytes ("" for non-scalars)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        return ""
    # Cut on a character boundary: a partial trailing character is dropped.
    return text.encode("utf-8", "replace")[:MAX_TEXT_BYTES].decode("utf-8", "ignore")


def _now_rfc3339() -> str:
    """The wall clock as RFC 3339 UTC with millisecond precision, e.g. 2026-01-02T03:04:05.678Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _current_trace_id() -> str:
    """The current OpenTelemetry trace id as 32 hex digits, or "" when there is none."""
    try:
        from opentelemetry import trace
    except ImportError:
        return ""
    try:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return ""
        trace_id = trace.format_trace_id(context.trace_id)
    except Exception:  # a broken tracer must not break a chat
        return ""
    return trace_id if _TRACE_ID.fullmatch(trace_id) and trace_id != "0" * 32 else ""


def _sessions_url(endpoint: str) -> str:
    """The session API URL under ``endpoint`` (a base URL; ``http://`` assumed without one)."""
    base = endpoint.strip().rstrip("/")
    if "://" not in base:
        base = "http://" + base
    return base if base.endswith(_SESSIONS_PATH) else base + _SESSIONS_PATH


def _safe_url(url: str) -> str:
    """``url`` without any user:password part, for logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparsable endpoint>"


def _local_address_towards(url: str) -> str:
    """The local IP this host uses to reach ``url``'s host (UDP connect: nothing is sent)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ValueError("endpoint has no host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.connect(address)
        local = str(probe.getsockname()[0])
    return local.split("%", 1)[0]  # drop an IPv6 zone such as %eth0


class Filter:
    """Pushes one event per model call ("call") or message ("request"), in the background."""

    class Valves(BaseModel):
        """Settings an admin edits in Open WebUI (Admin Panel -> Functions -> Valves)."""

        endpoint: str = Field(
            default="http://user-enricher:8089",
            description="Base URL of the otel-user-enricher session API (POST /v1/sessions).",
        )
        token: str = Field(default="", description="Bearer token of the session API.")
        timeout_seconds: float = Field(
            default=2.0, gt=0, le=60, description="Timeout of one push, in seconds."
        )
        source_address: str = Field(
            default="",
            description=(
                "IP address AgentGateway sees for Open WebUI. Empty: the local address "
                "used to reach the endpoint's host."
            ),
        )
        enabled: bool = Field(default=True, description="Send events at all.")

    def __init__(self) -> None:
        """Default valves; Open WebUI replaces them with the admin's settings."""
        self.valves = self.Valves()
        self._pending: set[asyncio.Future[None]] = set()
        # True once Open WebUI (>= 0.11.2) has called request(): inlet then stays quiet.
        self._request_hook_seen = False
        self._executor = ThreadPoolExecutor(
            max_workers=WORKERS, thread_name_prefix="user-enricher-filter"
        )
        self._addresses: dict[str, str] = {}  # sessions URL -> discovered local address
        self._warn_lock = threading.Lock()
        self._last_warning = float("-inf")
        self._suppressed = 0

    async def inlet(
        self,
        body: dict[str, Any],
        __user__: dict[str, Any] | None = None,
        __metadata__: dict[str, Any] | None = None,
        __model__: dict[str, Any] | None = None,
        __chat_id__: str | None = None,
        __message_id__: str | None = None,
    ) -> dict[str, Any]:
        """Report the request unless Open WebUI calls ``request`` (it then reports each call)."""
        if not self._request_hook_seen:
            self._report(
                "request", body, __user__, __metadata__, __model__, __chat_id__, __message_id__
            )
        return body

    async def request(
        self,
        body: dict[str, Any],
        __user__: dict[str, Any] | None = None,
        __metadata__: dict[str, Any] | None = None,
        __model__: dict[str, Any] | None = None,
        __chat_id__: str | None = None,
        __message_id__: str | None = None,
    ) -> dict[str, Any]:
        """Report one model call (Open WebUI >= 0.11.2 runs this right before each)."""
        self._request_hook_seen = True
        self._report("call", body, __user__, __metadata__, __model__, __chat_id__, __message_id__)
        return body

    def _report(
        self,
        kind: str,
        body: object,
        user: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        model: dict[str, Any] | None,
        chat_id: str | None,
        message_id: str | None,
    ) -> None:
        """Start the push in the background; never raises, never waits."""
        try:
            valves = self.valves
            if not valves.enabled or not valves.endpoint.strip():
                return
            event = self._event(kind, body, user, metadata, model, chat_id, message_id)
            if event is None:
                return
            if len(self._pending) >= MAX_PENDING:
                self._warn("dropped an event: %d pushes already pending", len(self._pending))
                return
            url = _sessions_url(valves.endpoint)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(
                self._executor,
                self._push,
                url,
                event,
                valves.source_address.strip(),
                valves.token.strip(),
                valves.timeout_seconds,
            )
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
        except Exception as exc:  # the chat goes on whatever happens here
            log.warning("user_enricher_filter: could not queue an event: %s", type(exc).__name__)

    def _event(
        self,
        kind: str,
        body: object,
        user: dict[str, Any] | None,
        metadata: dict[str, Any] | None,
        model: dict[str, Any] | None,
        chat_id: str | None,
        message_id: str | None,
    ) -> dict[str, Any] | None:
        """The event (without source_ip), or None when there is no user to report.

        ``kind`` is "call" from the ``request`` hook (one event per model call)
        and "request" from ``inlet`` (one per message, which may cause several calls).
        """
        if not isinstance(user, dict):
            return None
        user_id = _clip(user.get("id"))
        email = _clip(user.get("email"))
        if not _EMAIL.fullmatch(email):
            email = ""  # the service would reject the whole event
        if not user_id and not email:
            return None
        who: dict[str, Any] = {"id": user_id, "email": email, "name": _clip(user.get("name"))}
        role = _clip(user.get("role"))
        if role:
            who["roles"] = [role]
        meta = metadata if isinstance(metadata, dict) else {}
        body_model = body.get("model") if isinstance(body, dict) else None
        model_id = model.get("id") if isinstance(model, dict) else None
        event: dict[str, Any] = {
            "kind": kind,
            "user": {k: v for k, v in who.items() if v},
            "start": _now_rfc3339(),
            "model": _clip(body_model) or _clip(model_id),
            "chat_id": _clip(chat_id) or _clip(meta.get("chat_id")),
            "message_id": _clip(message_id) or _clip(meta.get("message_id")),
            # Read here, on the request's own context: worker threads do not inherit it.
            "trace_id": _current_trace_id(),
        }
        return {k: v for k, v in event.items() if v}

    def _push(
        self, url: str, event: dict[str, Any], source_address: str, token: str, timeout: float
    ) -> None:
        """POST one event (runs in a worker thread); failures are logged, never raised."""
        try:
            event["source_ip"] = source_address or self._discover(url)
            data = json.dumps(event).encode()
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            with _OPENER.open(request, timeout=timeout) as response:
                response.read()
            log.debug("user_enricher_filter: pushed a request event to %s", _safe_url(url))
        except urllib.error.HTTPError as exc:
            detail = exc.read(ERROR_BODY_CHARS).decode("utf-8", "replace") if exc.fp else ""
            self._warn(
                "push to %s failed: HTTP %d %s",
                _safe_url(url),
                exc.code,
                _redact(detail or str(exc.reason), token),
            )
        except Exception as exc:
            # OSError covers refused, unreachable, DNS and timeouts. Other errors
            # (say, a malformed header) may quote the request: name them only.
            detail = str(exc) if isinstance(exc, OSError) else "details withheld"
            self._warn(
                "push to %s failed: %s: %s",
                _safe_url(url),
                type(exc).__name__,
                _redact(detail, token),
            )

    def _discover(self, url: str) -> str:
        """The local address towards the endpoint's host, found once per endpoint."""
        address = self._addresses.get(url)
        if address is None:
            address = _local_address_towards(url)
            self._addresses[url] = address
            log.info(
                "user_enricher_filter: reporting source address %s (the local address "
                "towards %s); set the source_address valve if AgentGateway sees another",
                address,
                _safe_url(url),
            )
        return address

    def _warn(self, message: str, *args: object) -> None:
        """Log a failure as a warning at most once per WARN_EVERY_S, else at DEBUG."""
        now = time.monotonic()
        with self._warn_lock:
            loud = now - self._last_warning >= WARN_EVERY_S
            suppressed = self._suppressed
            if loud:
                self._last_warning = now
                self._suppressed = 0
            else:
                self._suppressed += 1
        if not loud:
            log.debug("user_enricher_filter: " + message, *args)
            return
        suffix = f" ({suppressed} similar messages suppressed)" if suppressed else ""
        log.warning("user_enricher_filter: " + message + suffix, *args)


def _redact(text: str, token: str) -> str:
    """``text`` with the token blanked out, should anything ever echo it."""
    return text.replace(token, "<redacted>") if token else text
