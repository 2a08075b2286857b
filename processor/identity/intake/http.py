"""HTTP front end: POST /v1/sessions, webhooks, health probes and (unless apart) /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from processor import status
from processor.errors import InvalidInput
from processor.identity.intake.push import SessionIntake
from processor.identity.intake.validate import parse_json_body
from processor.identity.intake.webhooks import ROUTE as WEBHOOK_ROUTE
from processor.identity.intake.webhooks import OpenWebUIWebhook
from processor.metrics import Metrics
from processor.receive.auth import BearerToken
from processor.receive.telemetry import Telemetry

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

    from processor.receive.auth import RateLimiter

log = structlog.get_logger("processor.identity.intake.http")

# Routes the rate limiter guards (by route pattern, so a wrong webhook secret is
# limited too), each with the label reported to ``on_limited``.
RATE_LIMITED_ROUTES = {"/v1/sessions": "sessions", WEBHOOK_ROUTE: "webhook"}


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def invalid_input_response(exc: InvalidInput) -> web.Response:
    """400 with every problem listed, each naming its field."""
    problems = [{"path": p.path, "message": p.message} for p in exc.problems]
    return _error(status.of(exc).http, str(exc), problems=problems)


def too_many_requests(delay_s: float) -> web.Response:
    """429 with a JSON body and the ``Retry-After`` header."""
    seconds = status.retry_after(delay_s)
    response = _error(status.RETRY_LATER.http, f"too many requests; retry after {seconds}s")
    response.headers["Retry-After"] = seconds
    return response


class HttpApi:
    """Builds the aiohttp application; state lives in the injected collaborators."""

    def __init__(
        self,
        *,
        intake: SessionIntake | None,
        auth: BearerToken | None,
        metrics: Metrics,
        max_body_bytes: int,
        ready: Callable[[], bool],
        identity_ready: Callable[[], bool] | None = None,
        metrics_auth: BearerToken | None = None,
        serve_metrics: bool = True,
        webhook: OpenWebUIWebhook | None = None,
        rate_limiter: RateLimiter | None = None,
        on_limited: Callable[[str], None] | None = None,
    ) -> None:
        self._intake = intake
        self._auth = auth
        self._metrics = metrics
        telemetry = Telemetry(metrics, ready, identity_ready or ready, metrics_auth)
        self._max_body = max_body_bytes
        self._limiter = rate_limiter
        self._on_limited = on_limited
        middlewares: list[Middleware] = [self._errors_middleware]
        if rate_limiter is not None:
            middlewares.append(self._rate_limit_middleware)
        self.app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
        telemetry.add_health(self.app)
        if serve_metrics:
            telemetry.add_metrics(self.app)
        if intake is not None:
            self.app.router.add_post("/v1/sessions", self._push_sessions)
        if webhook is not None:
            self.app.router.add_post(WEBHOOK_ROUTE, webhook.handle)

    @web.middleware
    async def _errors_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """Answer HTTP errors with JSON bodies; never leak internals on our bugs."""
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPRequestEntityTooLarge:
            self._reject("too_large")
            return _error(status.TOO_LARGE.http, f"body larger than {self._max_body} bytes")
        except web.HTTPException as exc:
            return _error(exc.status, exc.reason)
        except Exception:
            log.exception("http_handler_failed", path=request.path)
            return _error(status.INTERNAL.http, "internal error")

    @web.middleware
    async def _rate_limit_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """Answer 429 to a client over its rate on a guarded route, before reading the body."""
        assert self._limiter is not None
        route = _limited_route(request)
        if route is not None:
            delay = self._limiter.allow(request.remote or "")
            if delay is not None:
                if self._on_limited is not None:
                    self._on_limited(route)
                return too_many_requests(delay)
        response: web.StreamResponse = await handler(request)
        return response

    async def _push_sessions(self, request: web.Request) -> web.Response:
        assert self._intake is not None and self._auth is not None
        if not self._auth.allows(request.headers.get("Authorization")):
            self._reject("unauthenticated")
            response = _error(status.UNAUTHENTICATED.http, "missing or invalid bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="user-enricher"'
            return response
        if request.content_type != "application/json":
            self._reject("content_type")
            return _error(status.UNSUPPORTED.http, "expected Content-Type: application/json")
        body = await request.read()
        try:
            accepted = self._intake.push(parse_json_body(body), via="http")
        except InvalidInput as exc:
            self._reject("invalid")
            return invalid_input_response(exc)
        return web.json_response({"accepted": accepted})

    def _reject(self, reason: str) -> None:
        self._metrics.session_push_rejected.add(("http", reason))


def _limited_route(request: web.Request) -> str | None:
    """The label of the rate-limited route ``request`` is for, or None when unguarded."""
    if request.method != "POST":
        return None
    resource = request.match_info.route.resource
    return RATE_LIMITED_ROUTES.get(resource.canonical) if resource is not None else None
