"""Composition root: builds every component from the config and owns their lifecycle.

Start order: directory -> exporter channel -> gRPC server (OTLP, sessions,
health) -> HTTP API -> hold ticker, expiry sweeper, directory watcher.

Start-up replays the spool (requests a previous run accepted but did not
deliver) before the listeners open.

Shutdown order (so nothing accepted is left without a way out): mark not ready
-> stop accepting on gRPC and let in-flight calls finish within the grace
period -> stop the HTTP API -> stop the ticker -> release every held span into
the queue -> drain the queue up to exporter.queue.drain_timeout (what is left
stays in the spool, or is counted and logged as lost) -> stop retrying -> close
the exporter channel -> stop the sweeper and the directory watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from aiohttp import web
from grpc_health.v1 import health, health_pb2
from redis import asyncio as aioredis

from processor.app.config import Config
from processor.config.scalars import split_endpoint
from processor.config.tls import TlsConfig
from processor.correlate.correlator import Correlator, Rules
from processor.correlate.hold import HoldBuffer
from processor.correlate.identity import EmailHasher
from processor.correlate.lag import LagLearner, Window
from processor.correlate.resolve import Resolver
from processor.correlate.span_identity import IdentityReader
from processor.correlate.usage import Price, UsageReader
from processor.export import GrpcExporterSettings, OtlpGrpcSender, RetrySender
from processor.export.otlp_http import HttpExporterSettings, OtlpHttpSender
from processor.export.queue import ExportQueue
from processor.export.spool import Spool
from processor.identity.directory import Directory
from processor.identity.directory_watch import DirectoryWatcher
from processor.identity.intake.grpc_sessions import SERVICE_NAME as SESSION_SERVICE
from processor.identity.intake.grpc_sessions import SessionServicer
from processor.identity.intake.http import HttpApi
from processor.identity.intake.push import SessionIntake, TokenAuth
from processor.identity.intake.telemetry import Telemetry, telemetry_app
from processor.identity.intake.webhooks import OpenWebUIWebhook
from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.shared import RedisShare, safe_url
from processor.identity.sessions.traces import TraceIdentities
from processor.metrics import Metrics
from processor.model import Session, User
from processor.pipeline import Pipeline
from processor.receive.auth import (
    grpc_server_credentials,
    http_ssl_context,
    rate_limiter,
    receiver_auth,
)
from processor.receive.budget import InflightBudget
from processor.receive.grpc_trace import TraceReceiver
from processor.receive.guard import ConnectionGuard, GuardedSite
from processor.receive.http_trace import HttpTraceReceiver, build_runner
from processor.receive.rpc import health_handler
from processor.usage_labels import UserLabels

log = structlog.get_logger("processor.service")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
# Spans are exported seconds (SDK batching) to minutes (retries) after they start,
# so a session stays matchable for this long after its end before it is dropped.
EXPIRY_GRACE_S = 300.0
# Held spans are released at most this late after their deadline.
MAX_TICK_S = 0.25
_NS = 1_000_000_000


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
        self.metrics = metrics if metrics is not None else Metrics()
        self._clock_ns = clock_ns
        self.store = MemorySessionStore(config.sessions.max_sessions)
        self._push = self._build_push()
        self._sender = RetrySender(
            self._push,
            config.exporter.retry,
            on_retry=self._on_retry,
        )
        self.traces = TraceIdentities(
            int(config.correlation.trace_ttl * _NS), config.correlation.max_traces
        )
        self.correlator = build_correlator(config, self.store, self.traces)
        self.share = self._build_share()
        queue = config.exporter.queue
        self.spool = Spool(queue.directory, queue.max_spool_bytes) if queue.directory else None
        self.pipeline = Pipeline(
            self.correlator,
            self.metrics,
            clock_ns=clock_ns,
            policy=config.correlation.ambiguous,
            retry_after_s=queue.retry_after,
            spool=self.spool,
            on_learned=self.share.trace if self.share is not None else None,
            user_labels=UserLabels(
                config.usage.max_users,
                mode=config.usage.user_label,
                hasher=_label_hasher(config),
                hide_emails=config.identity.hash_emails,
                team_of=lambda user: self.correlator.directory.team_of(user),
            )
            if config.usage.enabled
            else None,
        )
        self.queue = ExportQueue(
            self._sender,
            size=queue.size,
            max_bytes=queue.max_bytes,
            consumers=queue.consumers,
            merge_bytes=queue.merge_bytes,
            on_delivered=self.pipeline.delivered,
            on_dropped=self.pipeline.dropped,
            on_requeued=self.pipeline.requeued,
            on_latency=self.metrics.export_latency.observe,
        )
        self.pipeline.attach(self.queue)
        # One budget for both receivers: what they hold before the queue has it.
        self.inflight = InflightBudget(inflight_limit(config), config.exporter.queue.retry_after)
        self._receiver = TraceReceiver(
            self.pipeline,
            self.metrics,
            auth=receiver_auth(config.receiver.auth),
            budget=self.inflight,
        )
        self._otlp_http = HttpTraceReceiver(
            self.pipeline,
            self.metrics,
            max_message_bytes=config.receiver.max_message_bytes,
            auth=receiver_auth(config.receiver.auth),
            budget=self.inflight,
        )
        self._otlp_http_runner: web.AppRunner | None = None
        self.guards: dict[str, ConnectionGuard] = {}
        self._intake = self._build_intake()
        self._directory_watcher = (
            DirectoryWatcher(
                config.directory.file, config.directory.reload_interval, self._publish_directory
            )
            if config.directory.file
            else None
        )
        self._health = health.aio.HealthServicer()
        self._grpc_server: grpc.aio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._telemetry_runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._ready = False
        self.addresses = BoundAddresses(grpc="", http=None)
        self._bind_gauges()

    def _bind_gauges(self) -> None:
        """Gauges that mirror a component's size read it at scrape time."""
        m, queue, spool = self.metrics, self.config.exporter.queue, self.spool
        m.spans_holding.set_function(lambda: self.correlator.held)
        m.held_capacity.set(self.config.correlation.max_held_spans)
        m.queue_batches.set_function(lambda: len(self.queue))
        m.queue_bytes.set_function(lambda: self.queue.bytes)
        m.inflight_bytes.set_function(lambda: self.inflight.used)
        m.inflight_capacity_bytes.set(self.inflight.limit)
        m.queue_capacity_batches.set(queue.size)
        m.queue_capacity_bytes.set(queue.max_bytes)
        if spool is not None:
            m.spool_requests.set_function(lambda: len(spool))
            m.spool_bytes.set_function(lambda: spool.bytes_used)
            m.spool_capacity_bytes.set(queue.max_spool_bytes)
        m.sessions_active.set_function(lambda: len(self.store))
        m.trace_identities.set_function(lambda: len(self.traces))
        lags = self.correlator.lags
        if lags is not None:
            m.learned_lag.set_function(lambda: _lag_quantiles(lags, self._clock_ns()))
            m.learned_lag_samples.set_function(
                lambda: {key: s.samples for key, s in lags.summaries(self._clock_ns()).items()}
            )
        # The in-memory store is always usable; Redis reports its state as it changes.
        m.store_connected.set(1 if self.share is None else 0)

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
        intake, auth = self._session_intake()
        grpc_address = await self._start_grpc(intake, auth)
        otlp_http_address = await self._start_otlp_http()
        http_address = await self._start_http(intake, auth)
        telemetry_address = await self._start_telemetry()
        self.addresses = BoundAddresses(
            grpc=grpc_address,
            http=http_address,
            otlp_http=otlp_http_address,
            telemetry=telemetry_address,
        )
        self._sweeper = asyncio.create_task(self._sweep(), name="session-sweeper")
        if self.config.correlation.hold:
            self._ticker = asyncio.create_task(self._tick(), name="hold-ticker")
        if self._directory_watcher is not None:
            self._directory_watcher.start()
        for service in ("", TRACE_SERVICE, SESSION_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._ready = True
        log.info(
            "service_started",
            grpc=grpc_address,
            otlp_http=otlp_http_address,
            http=http_address,
            telemetry=telemetry_address,
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
        await self._health.enter_graceful_shutdown()
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace_s)
        if self._otlp_http_runner is not None:
            await self._otlp_http_runner.cleanup()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self._telemetry_runner is not None:
            await self._telemetry_runner.cleanup()
        await _cancel(self._ticker)
        held = self.correlator.held
        self._sender.hurry()  # no batch sleeps through the drain in a long backoff
        spooled, lost = await self.pipeline.drain(self.config.exporter.queue.drain_timeout)
        await self._sender.shutdown()
        await self._push.shutdown()
        await _cancel(self._sweeper)
        if self._directory_watcher is not None:
            await self._directory_watcher.shutdown()
        if self.share is not None:
            await self.share.shutdown()
        log.info("service_stopped", held_spans_flushed=held, spans_spooled=spooled, spans_lost=lost)

    def _session_intake(self) -> tuple[SessionIntake | None, TokenAuth | None]:
        api = self.config.api
        if not api.enabled or api.token is None:
            return None, None
        return self._intake, TokenAuth(api.token.get_secret_value())

    def _webhook(self) -> OpenWebUIWebhook | None:
        hook = self.config.webhooks.openwebui
        if not hook.enabled or hook.secret is None:
            return None
        return OpenWebUIWebhook(
            self._intake, hook.secret.get_secret_value(), hook.source_ip, self.metrics
        )

    def _build_intake(self) -> SessionIntake:
        return SessionIntake(
            self.store,
            self.metrics,
            default_ttl_s=self.config.sessions.ttl,
            clock_ns=self._clock_ns,
            on_stored=self._stored,
            on_closed=self.share.close if self.share is not None else None,
        )

    def _stored(self, session: Session) -> None:
        """A session stored here: release what it explains, and share it."""
        self.pipeline.session_stored(session)
        if self.share is not None:
            self.share.session(session)

    def _build_share(self) -> RedisShare | None:
        s = self.config.sessions
        if s.store == "memory":
            return None
        options: dict[str, Any] = {
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            "health_check_interval": 10,
        }
        if s.redis_password is not None:
            options["password"] = s.redis_password.get_secret_value()
        if s.store.startswith("rediss://") and s.redis_ca_file:
            options["ssl_ca_certs"] = s.redis_ca_file
        client = aioredis.Redis.from_url(s.store, **options)
        return RedisShare(
            client,
            prefix=s.redis_prefix,
            clock_ns=self._clock_ns,
            grace_ns=int(EXPIRY_GRACE_S * _NS),
            trace_ttl_ns=int(self.config.correlation.trace_ttl * _NS),
            on_session=self._remote_session,
            on_close=self.store.close,
            on_trace=self._remote_trace,
            on_state=self._store_state,
        )

    def _remote_session(self, session: Session) -> None:
        self.store.add(session)
        self.pipeline.session_stored(session)

    def _remote_trace(self, trace_id: bytes, user: User) -> None:
        self.pipeline.trace_learned(trace_id, user)

    def _store_state(self, connected: bool) -> None:
        self.metrics.store_connected.set(1 if connected else 0)
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if connected
            else (health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        asyncio.get_running_loop().create_task(self._health.set(SESSION_SERVICE, status))
        log.info(
            "session_store_state", connected=connected, store=safe_url(self.config.sessions.store)
        )

    async def _start_grpc(self, intake: SessionIntake | None, auth: TokenAuth | None) -> str:
        limit = self.config.receiver.max_message_bytes
        c = self.config.connections
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", c.grpc_max_concurrent_streams),
                ("grpc.max_connection_idle_ms", int(c.idle_timeout * 1000)),
                # Keep-alive enforcement (the Collector's): pings no more often than
                # every 5 s and only during calls; two strikes close the connection.
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
                ("grpc.keepalive_permit_without_calls", 0),
                ("grpc.http2.max_ping_strikes", 2),
            ],
            # Past it a call gets RESOURCE_EXHAUSTED before its message is read, which
            # bounds what gRPC buffers ahead of the in-flight budget.
            maximum_concurrent_rpcs=c.grpc_max_concurrent_rpcs,
        )
        handlers = [self._receiver.handler()]
        if intake is not None and auth is not None:
            handlers.append(SessionServicer(intake, auth, self.metrics).handler())
        server.add_generic_rpc_handlers(handlers)
        server.add_generic_rpc_handlers([health_handler(self._health)])
        host, port = split_endpoint(self.config.receiver.grpc_endpoint)
        address = _join(host, port)
        tls = self.config.receiver.tls
        try:
            bound = (
                server.add_secure_port(address, grpc_server_credentials(tls))
                if tls.enabled
                else server.add_insecure_port(address)
            )
        except RuntimeError:  # grpcio raises this (not OSError) when the bind fails
            bound = 0
        if bound == 0:
            raise OSError(
                f"cannot listen on {self.config.receiver.grpc_endpoint} "
                "(receiver.grpc_endpoint): address in use or not available"
            )
        await server.start()
        self._grpc_server = server
        return _join(host, bound)

    def _build_push(self) -> OtlpGrpcSender | OtlpHttpSender:
        """The last link of the export chain: OTLP over gRPC or over HTTP."""
        exporter = self.config.exporter
        if exporter.protocol == "http":
            return OtlpHttpSender(
                HttpExporterSettings.from_config(exporter),
                on_partial_success=self._on_partial_success,
            )
        return OtlpGrpcSender(
            GrpcExporterSettings.from_config(exporter),
            on_partial_success=self._on_partial_success,
        )

    async def _start_otlp_http(self) -> str | None:
        """The OTLP/HTTP receiver (POST /v1/traces), unless receiver.http_endpoint is empty."""
        endpoint = self.config.receiver.http_endpoint
        if not endpoint:
            return None
        runner = build_runner(
            self._otlp_http, keepalive_timeout=self.config.connections.idle_timeout
        )
        address = await _listen(
            runner, endpoint, self.config.receiver.tls, self._guard("otlp_http")
        )
        self._otlp_http_runner = runner
        return address

    async def _start_http(self, intake: SessionIntake | None, auth: TokenAuth | None) -> str:
        api = HttpApi(
            intake=intake,
            auth=auth,
            metrics=self.metrics,
            max_body_bytes=self.config.api.max_body_bytes,
            ready=lambda: self._ready,
            identity_ready=lambda: self.identity_ready,
            metrics_auth=self._metrics_auth(),
            serve_metrics=not self.config.telemetry.endpoint,
            webhook=self._webhook(),
            rate_limiter=rate_limiter(self.config.api.rate_limit),
            on_limited=self._on_rate_limited,
        )
        runner = web.AppRunner(
            api.app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.config.connections.idle_timeout,
            shutdown_timeout=HTTP_SHUTDOWN_S,
        )
        address = await _listen(
            runner, self.config.api.endpoint, self.config.api.tls, self._guard("api")
        )
        self._http_runner = runner
        return address

    def _guard(self, listener: str) -> ConnectionGuard:
        """A new guard for one HTTP listener, kept for inspection (tests, metrics)."""
        guard = self.guards[listener] = connection_guard(self.config)
        return guard

    def _metrics_auth(self) -> TokenAuth | None:
        token = self.config.telemetry.token
        return TokenAuth(token.get_secret_value()) if token is not None else None

    async def _start_telemetry(self) -> str | None:
        """Health and /metrics on their own listener, when telemetry.endpoint is set."""
        telemetry = self.config.telemetry
        if not telemetry.endpoint:
            return None
        routes = Telemetry(
            self.metrics, lambda: self._ready, lambda: self.identity_ready, self._metrics_auth()
        )
        runner = web.AppRunner(
            telemetry_app(routes),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self.config.connections.idle_timeout,
            shutdown_timeout=HTTP_SHUTDOWN_S,
        )
        address = await _listen(runner, telemetry.endpoint, telemetry.tls, self._guard("telemetry"))
        self._telemetry_runner = runner
        return address

    async def _sweep(self) -> None:
        """Drop ended sessions periodically and publish the store size."""
        while True:
            await asyncio.sleep(self.config.sessions.sweep_interval)
            try:
                self.sweep_once()
            except Exception:  # keep sweeping; a dead sweeper would grow the store
                log.exception("sweep_failed")

    def sweep_once(self) -> int:
        """One expiry pass at the injected clock's now; returns sessions dropped."""
        now = self._clock_ns()
        dropped = self.store.expire(now - int(EXPIRY_GRACE_S * _NS))
        self.traces.expire(now)
        self.metrics.sessions_expired.inc(dropped)
        return dropped

    async def _tick(self) -> None:
        """Release held spans whose hold ran out."""
        interval = min(MAX_TICK_S, self.config.correlation.hold / 10)
        while True:
            await asyncio.sleep(interval)
            try:
                self.pipeline.tick()
            except Exception:  # keep ticking; held spans must keep leaving
                log.exception("hold_tick_failed")

    def _publish_directory(self, directory: Directory) -> None:
        self.correlator.directory = directory

    def _on_rate_limited(self, route: str) -> None:
        self.metrics.api_rate_limited.add((route,))

    def _on_retry(self, attempt: int, delay_s: float, code: str) -> None:
        self.metrics.export_retries.add((code,))

    def _on_partial_success(self, rejected: int, message: str) -> None:
        self.metrics.export_failures.add(("PARTIAL_SUCCESS",))


def build_correlator(
    config: Config, store: MemorySessionStore, traces: TraceIdentities
) -> Correlator:
    """The correlator the service runs, from its config (also used by the benchmarks)."""
    c = config.correlation
    rules = Rules(
        address_keys=c.address_attributes,
        model_keys=c.model_attributes,
        principal_keys=config.directory.principal_attributes,
        hold_ns=int(c.hold * _NS),
        hasher=_hasher(config),
    )
    window_ns, skew_ns = int(c.request_window * _NS), int(c.clock_skew * _NS)
    lags = (
        LagLearner(
            Window(-skew_ns, window_ns),
            min_samples=c.lag_min_samples,
            stale_ns=int(c.lag_stale_after * _NS),
        )
        if c.learn_lag
        else None
    )
    resolver = Resolver(
        window_ns=window_ns,
        skew_ns=skew_ns,
        policy=c.ambiguous,
        lags=lags,
        margin=c.likelihood_margin,
    )
    prices = {
        model: Price(p.input_per_million, p.output_per_million)
        for model, p in config.usage.prices.items()
    }
    return Correlator(
        rules,
        resolver,
        IdentityReader(c.identity_attributes),
        store,
        traces,
        HoldBuffer(c.max_held_spans),
        usage=UsageReader(prices) if config.usage.enabled else None,
    )


def _hasher(config: Config) -> EmailHasher | None:
    identity = config.identity
    if not identity.hash_emails or identity.hash_key is None:
        return None
    return EmailHasher(identity.hash_key.get_secret_value().encode())


def _label_hasher(config: Config) -> EmailHasher | None:
    """The keyed hash for metric labels: identity.hash_key whenever one is set."""
    key = config.identity.hash_key
    return EmailHasher(key.get_secret_value().encode()) if key is not None else None


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Stop a background task; its own failure must not abort a shutdown."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


# How long an HTTP listener's requests in flight may finish at shutdown (then cancelled).
HTTP_SHUTDOWN_S = 5.0


def connection_guard(config: Config) -> ConnectionGuard:
    """A listener's guard built from ``connections`` (one per listener)."""
    c = config.connections
    return ConnectionGuard(
        max_connections=c.max_http_connections,
        header_timeout_s=c.header_timeout,
        body_timeout_s=c.body_timeout,
        idle_timeout_s=c.idle_timeout,
    )


async def _listen(
    runner: web.AppRunner, endpoint: str, tls: TlsConfig, guard: ConnectionGuard
) -> str:
    """Serve ``runner``'s app on ``endpoint`` (TLS when configured) behind ``guard``."""
    runner.app.middlewares.append(guard.middleware)
    await runner.setup()
    host, port = split_endpoint(endpoint)
    site = GuardedSite(
        runner,
        host,
        port,
        reuse_port=False,
        ssl_context=http_ssl_context(tls) if tls.enabled else None,
        guard=guard,
    )
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return _join(host, bound)


def inflight_limit(config: Config) -> int:
    """receiver.max_inflight_bytes, or its default derived from the queue's bound."""
    r = config.receiver
    if r.max_inflight_bytes is not None:
        return r.max_inflight_bytes
    return max(r.max_message_bytes, config.exporter.queue.max_bytes // 4)


def _lag_quantiles(lags: LagLearner, now_ns: int) -> dict[tuple[str, ...], float]:
    """The learned lag's median and 99th percentile per address and event kind, in seconds."""
    out: dict[tuple[str, ...], float] = {}
    for (ip, kind), summary in lags.summaries(now_ns).items():
        out[(ip, kind, "0.5")] = summary.p50_ns / _NS
        out[(ip, kind, "0.99")] = summary.p99_ns / _NS
    return out


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
