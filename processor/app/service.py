"""The running service: wires the parts :mod:`processor.app.build` makes, and orders
their start and shutdown.

Start order: directory -> exporter channel -> spool replay (requests a previous run
accepted but did not deliver) -> gRPC server (OTLP, sessions, health) -> OTLP/HTTP
-> HTTP API -> telemetry -> expiry sweeper, hold ticker, directory watcher.

Shutdown order (so nothing accepted is left without a way out): mark not ready
-> stop accepting on gRPC and let in-flight calls finish within the grace
period -> stop the HTTP listeners -> stop the ticker -> release every held span into
the queue -> drain the queue up to exporter.queue.drain_timeout (what is left
stays in the spool, or is counted and logged as lost) -> stop retrying -> close
the exporter channel -> stop the sweeper, the directory watcher and Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import structlog
from aiohttp import web

from processor.app import build
from processor.app.config import Config
from processor.app.gauges import bind_gauges
from processor.app.health import Health
from processor.app.listen import http_runner, start_grpc, start_http
from processor.app.tasks import cancel, every
from processor.config.tls import TlsConfig
from processor.export.retry import RetrySender
from processor.identity.directory import Directory
from processor.identity.intake.grpc_sessions import SessionServicer
from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.shared import safe_url
from processor.metrics import Metrics
from processor.model import Session, User
from processor.pipeline import Ledger, Pipeline
from processor.receive.guard import ConnectionGuard
from processor.receive.http_trace import build_runner
from processor.receive.rpc import health_handler
from processor.receive.telemetry import Telemetry, telemetry_app

log = structlog.get_logger("processor.service")


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    """Where the service actually listens (ports resolved when configured as 0)."""

    grpc: str
    http: str | None
    otlp_http: str | None = None
    telemetry: str | None = None  # None: health and /metrics are on ``http``


class Service:
    """The running service; ``start()`` then ``shutdown()``."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.metrics = m = metrics if metrics is not None else Metrics()
        self._clock_ns = clock_ns
        self.store = MemorySessionStore(config.sessions.max_sessions)
        self.traces = build.trace_identities(config)
        self.correlator = build.build_correlator(config, self.store, self.traces)
        self._push = build.exporter(config, self._on_partial_success)
        self._sender = RetrySender(self._push, config.exporter.retry, on_retry=self._on_retry)
        self.share = build.redis_share(
            config,
            self.store,
            clock_ns,
            on_session=self._remote_session,
            on_trace=self._remote_trace,
            on_state=self._store_state,
        )
        self.spool = build.spool(config)
        ledger = Ledger(m, self.spool)
        self.queue = build.export_queue(config, self._sender, ledger, m)
        recorder = build.recorder(config, m, self.correlator)
        self.pipeline = Pipeline(
            self.correlator,
            self.queue,
            ledger,
            recorder,
            clock_ns=clock_ns,
            retry_after_s=config.exporter.queue.retry_after,
            spool=self.spool,
            on_learned=self.share.trace if self.share is not None else None,
        )
        self.inflight = build.inflight_budget(config)
        self._receiver, self._otlp_http = build.trace_receivers(
            config, self.pipeline, m, self.inflight
        )
        self._intake = build.session_intake(
            config,
            self.store,
            m,
            clock_ns,
            on_stored=self._stored,
            on_closed=self.share.close if self.share is not None else None,
        )
        self._api_auth = build.api_token(config)
        self._directory_watcher = build.directory_watcher(config, self._publish_directory)
        self._health = Health()
        self._grpc_server: grpc.aio.Server | None = None
        self._runners: list[web.AppRunner] = []  # HTTP listeners, in start order
        self._sweeper: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._ready = False
        self.guards: dict[str, ConnectionGuard] = {}
        self.addresses = BoundAddresses(grpc="", http=None)
        bind_gauges(
            m,
            config,
            correlator=self.correlator,
            queue=self.queue,
            inflight=self.inflight,
            spool=self.spool,
            store=self.store,
            traces=self.traces,
            shared_store=self.share is not None,
            clock_ns=clock_ns,
        )

    @property
    def ready(self) -> bool:
        """True between a completed start() and the beginning of shutdown()."""
        return self._ready

    @property
    def identity_ready(self) -> bool:
        """Ready, and the shared session store (if any) connected and in sync."""
        return self._ready and (self.share is None or self.share.connected)

    async def start(self) -> None:
        """Load the directory, open the exporter, bind the listeners, start the timers."""
        if self._directory_watcher is not None:
            self._directory_watcher.load()
        await self._push.start()
        self.queue.start()
        if self.share is not None:
            self.share.start()
        replayed = self.pipeline.replay()
        grpc_address = await self._start_grpc()
        otlp_http_address = await self._start_otlp_http()
        api_address = await self._start_api()
        telemetry_address = await self._start_telemetry()
        self.addresses = BoundAddresses(
            grpc=grpc_address,
            http=api_address,
            otlp_http=otlp_http_address,
            telemetry=telemetry_address,
        )
        self._sweeper = every(
            self.config.sessions.sweep_interval,
            self.sweep_once,
            name="session-sweeper",
            failure="sweep_failed",
        )
        tick = build.tick_interval(self.config)
        if tick is not None:
            self._ticker = every(
                tick,
                self.pipeline.tick,
                name="hold-ticker",
                failure="hold_tick_failed",
            )
        if self._directory_watcher is not None:
            self._directory_watcher.start()
        await self._health.serving()
        self._ready = True
        log.info(
            "service_started",
            grpc=self.addresses.grpc,
            otlp_http=self.addresses.otlp_http,
            http=self.addresses.http,
            telemetry=self.addresses.telemetry,
            exporter=self.config.exporter.endpoint,
            exporter_protocol=self.config.exporter.protocol,
            spool=self.config.exporter.queue.directory,
            replayed_requests=replayed,
        )

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop accepting, flush held spans, drain the queue, then close everything.

        ``grace_s`` bounds how long in-flight calls may take to finish; the queue
        is drained for up to ``exporter.queue.drain_timeout`` after that.
        """
        self._ready = False
        await self._health.shutting_down()
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace_s)
        for runner in self._runners:
            await runner.cleanup()
        await cancel(self._ticker)
        held = self.correlator.held
        self._sender.hurry()  # no batch sleeps through the drain in a long backoff
        spooled, lost = await self.pipeline.drain(self.config.exporter.queue.drain_timeout)
        await self._sender.shutdown()
        await self._push.shutdown()
        await cancel(self._sweeper)
        if self._directory_watcher is not None:
            await self._directory_watcher.shutdown()
        if self.share is not None:
            await self.share.shutdown()
        log.info("service_stopped", held_spans_flushed=held, spans_spooled=spooled, spans_lost=lost)

    def sweep_once(self) -> int:
        """One expiry pass at the injected clock's now; returns sessions dropped."""
        now = self._clock_ns()
        dropped = self.store.expire(now - int(build.EXPIRY_GRACE_S * build.NS))
        self.traces.expire(now)
        self.metrics.sessions_expired.inc(dropped)
        return dropped

    # ------------------------------------------------------------------ listeners

    async def _start_grpc(self) -> str:
        server = build.grpc_server(self.config)
        handlers = [self._receiver.handler()]
        if self._api_auth is not None:
            handlers.append(SessionServicer(self._intake, self._api_auth, self.metrics).handler())
        server.add_generic_rpc_handlers(handlers)
        server.add_generic_rpc_handlers([health_handler(self._health.servicer)])
        receiver = self.config.receiver
        address = await start_grpc(server, receiver.grpc_endpoint, receiver.tls)
        self._grpc_server = server
        return address

    async def _start_otlp_http(self) -> str | None:
        """The OTLP/HTTP receiver (POST /v1/traces), unless receiver.http_endpoint is empty."""
        receiver = self.config.receiver
        if not receiver.http_endpoint:
            return None
        runner = build_runner(
            self._otlp_http, keepalive_timeout=self.config.connections.idle_timeout
        )
        return await self._serve(runner, receiver.http_endpoint, receiver.tls, "otlp_http")

    async def _start_api(self) -> str:
        """The session API, the webhooks and (unless telemetry has its own port) health."""
        config = self.config
        api = build.session_http_api(
            config,
            self._intake,
            self.metrics,
            ready=lambda: self._ready,
            identity_ready=lambda: self.identity_ready,
        )
        runner = http_runner(api.app, config.connections.idle_timeout)
        return await self._serve(runner, config.api.endpoint, config.api.tls, "api")

    async def _start_telemetry(self) -> str | None:
        """Health and /metrics on their own listener, when telemetry.endpoint is set."""
        telemetry = self.config.telemetry
        if not telemetry.endpoint:
            return None
        routes = Telemetry(
            self.metrics,
            lambda: self._ready,
            lambda: self.identity_ready,
            build.metrics_token(self.config),
        )
        runner = http_runner(telemetry_app(routes), self.config.connections.idle_timeout)
        return await self._serve(runner, telemetry.endpoint, telemetry.tls, "telemetry")

    async def _serve(
        self, runner: web.AppRunner, endpoint: str, tls: TlsConfig, listener: str
    ) -> str:
        """Open one HTTP listener behind a guard of its own (kept for tests and metrics)."""
        guard = self.guards[listener] = build.connection_guard(self.config)
        address = await start_http(runner, endpoint, tls, guard)
        self._runners.append(runner)
        return address

    # ------------------------------------------------------------------ callbacks

    def _stored(self, session: Session) -> None:
        """A session stored here: release what it explains, and share it."""
        self.pipeline.session_stored(session)
        if self.share is not None:
            self.share.session(session)

    def _remote_session(self, session: Session) -> None:
        self.store.add(session)
        self.pipeline.session_stored(session)

    def _remote_trace(self, trace_id: bytes, user: User) -> None:
        self.pipeline.trace_learned(trace_id, user)

    def _store_state(self, connected: bool) -> None:
        self.metrics.store_connected.set(1 if connected else 0)
        self._health.store_state(connected)
        log.info(
            "session_store_state", connected=connected, store=safe_url(self.config.sessions.store)
        )

    def _publish_directory(self, directory: Directory) -> None:
        self.correlator.use_directory(directory)

    def _on_retry(self, attempt: int, delay_s: float, code: str) -> None:
        self.metrics.export_retries.add((code,))

    def _on_partial_success(self, rejected: int, message: str) -> None:
        self.metrics.export_failures.add(("PARTIAL_SUCCESS",))
