"""Health probes and Prometheus ``/metrics``: on the API port, or on their own listener.

Health (``/healthz``, ``/readyz``, ``/readyz/identity``) is never authenticated (probes
cannot carry secrets) and says nothing about users. ``/metrics`` lists per-user usage,
so it may require a bearer token (``telemetry.token``), which Prometheus sends with
``authorization: {credentials_file: ...}`` in its scrape config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from processor import status
from processor.metrics import Metrics
from processor.receive.auth import BearerToken


@dataclass(frozen=True, slots=True)
class Telemetry:
    """What the telemetry routes read; ``metrics_auth`` None means /metrics is open."""

    metrics: Metrics
    ready: Callable[[], bool]
    identity_ready: Callable[[], bool]
    metrics_auth: BearerToken | None = None

    def add_health(self, app: web.Application) -> None:
        """Mount the three probes on ``app``."""
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/readyz/identity", self._readyz_identity)

    def add_metrics(self, app: web.Application) -> None:
        """Mount ``/metrics`` on ``app``."""
        app.router.add_get("/metrics", self._metrics)

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.ready():
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=status.NOT_READY.http)

    async def _readyz_identity(self, _: web.Request) -> web.Response:
        """Whether identity is current: 503 while the shared session store is unreachable.

        Spans keep flowing meanwhile (``/readyz`` stays 200), attributed from the
        replica's own copy of the sessions.
        """
        if self.identity_ready():
            return web.json_response({"status": "ready"})
        return web.json_response(
            {"status": "session store unreachable"}, status=status.NOT_READY.http
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        auth = self.metrics_auth
        if auth is not None and not auth.allows(request.headers.get("Authorization")):
            response = web.json_response(
                {"error": "missing or invalid bearer token"}, status=status.UNAUTHENTICATED.http
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="user-enricher-metrics"'
            return response
        return web.Response(
            body=self.metrics.scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def telemetry_app(telemetry: Telemetry) -> web.Application:
    """The application of the separate telemetry listener: health and /metrics only."""
    app = web.Application(client_max_size=4096)
    telemetry.add_health(app)
    telemetry.add_metrics(app)
    return app
