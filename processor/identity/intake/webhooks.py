"""HTTP front end for Open WebUI's event webhooks: POST /v1/webhooks/openwebui/<secret>."""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web

from processor import status
from processor.errors import InvalidInput
from processor.identity.address import normalize_ip
from processor.identity.intake.openwebui import (
    Close,
    Ignore,
    Store,
    event_name,
    interpret,
    parse_body,
)
from processor.identity.intake.push import SessionIntake
from processor.metrics import Metrics

ROUTE = "/v1/webhooks/openwebui/{secret}"

log = structlog.get_logger("processor.identity.intake.webhooks")


class OpenWebUIWebhook:
    """Turns webhook events into request events and sessions for the event's actor.

    A webhook URL cannot carry an Authorization header, so the secret is the last
    path segment. A wrong secret gets the same 404 as a path that does not exist,
    so it gives no hint that the endpoint is there.
    """

    def __init__(
        self, intake: SessionIntake, secret: str, source_ip: str, metrics: Metrics
    ) -> None:
        self._intake = intake
        self._secret = secret.encode()
        self._source_ip = source_ip
        self._metrics = metrics

    def __repr__(self) -> str:
        return "OpenWebUIWebhook(<secret redacted>)"

    async def handle(self, request: web.Request) -> web.Response:
        """Receive one event; 200 whether it was used or ignored, so Open WebUI never retries."""
        presented = request.match_info["secret"].encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(presented, self._secret):
            self._count("none", "wrong_secret")
            raise web.HTTPNotFound()
        if request.content_type != "application/json":
            self._count("none", "content_type")
            return web.json_response(
                {"error": "expected Content-Type: application/json"}, status=status.UNSUPPORTED.http
            )
        body = await request.read()
        try:
            data = parse_body(body)
        except InvalidInput as exc:
            self._count("none", "invalid")
            return web.json_response({"error": str(exc)}, status=status.INVALID.http)
        source_ip = self._source_ip or normalize_ip(request.remote or "")
        if source_ip is None:
            self._count(event_name(data), "no_address")
            return web.json_response(
                {"error": "cannot tell the sender's address"}, status=status.INVALID.http
            )
        action = interpret(
            data,
            source_ip=source_ip,
            now_ns=self._intake.now_ns(),
            session_ttl_s=self._intake.default_ttl_s,
        )
        return self._apply(event_name(data), action)

    def _apply(self, name: str, action: Store | Close | Ignore) -> web.Response:
        if isinstance(action, Ignore):
            self._count(name, action.reason)
            return web.json_response({"status": "ignored", "reason": action.reason})
        if isinstance(action, Close):
            closed = self._intake.close(action.source_ip, action.user_key, action.at_ns)
            self._count(name, "accepted")
            return web.json_response({"status": "accepted", "closed": closed})
        self._intake.store([action.session], via="webhook")
        self._count(name, "accepted")
        return web.json_response({"status": "accepted"})

    def _count(self, event: str, outcome: str) -> None:
        self._metrics.webhook_events.add((event, outcome))
