"""Building the service's parts from the whole config: the one reader of every section.

Each function turns sections into one component; none of them starts anything
(that is :mod:`processor.app.service`'s job, in order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from redis import asyncio as aioredis

from processor.app.config import Config
from processor.correlate.correlator import Correlator, Rules
from processor.correlate.hold import HoldBuffer
from processor.correlate.identity import EmailHasher
from processor.correlate.lag import LagLearner, Window
from processor.correlate.resolve import Resolver
from processor.correlate.span_identity import IdentityReader
from processor.correlate.usage import Price, UsageReader
from processor.correlate.usage_labels import UserLabels
from processor.export import OtlpGrpcSender
from processor.export.otlp_grpc import PartialSuccessHook
from processor.export.otlp_http import OtlpHttpSender
from processor.export.queue import ExportQueue
from processor.export.retry import RetrySender
from processor.export.spool import Spool
from processor.identity.directory import Directory
from processor.identity.directory_watch import DirectoryWatcher
from processor.identity.intake.http import HttpApi
from processor.identity.intake.push import SessionIntake
from processor.identity.intake.webhooks import OpenWebUIWebhook
from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.shared import RedisShare
from processor.identity.sessions.traces import TraceIdentities
from processor.metrics import Metrics
from processor.model import Session, User
from processor.pipeline import Ledger, Pipeline, Recorder
from processor.receive.auth import BearerToken, rate_limiter, receiver_auth
from processor.receive.budget import InflightBudget
from processor.receive.grpc_trace import TraceReceiver
from processor.receive.guard import ConnectionGuard
from processor.receive.http_trace import HttpTraceReceiver

NS = 1_000_000_000
# Spans are exported seconds (SDK batching) to minutes (retries) after they start,
# so a session stays matchable for this long after its end before it is dropped.
EXPIRY_GRACE_S = 300.0
# Held spans are released at most this late after their deadline.
MAX_TICK_S = 0.25


def build_correlator(
    config: Config, store: MemorySessionStore, traces: TraceIdentities
) -> Correlator:
    """The correlator the service runs, from its config (also used by the benchmarks)."""
    c = config.correlation
    rules = Rules(
        address_keys=c.address_attributes,
        model_keys=c.model_attributes,
        principal_keys=config.directory.principal_attributes,
        hold_ns=int(c.hold * NS),
        hasher=_hasher(config),
    )
    window_ns, skew_ns = int(c.request_window * NS), int(c.clock_skew * NS)
    lags = (
        LagLearner(
            Window(-skew_ns, window_ns),
            min_samples=c.lag_min_samples,
            stale_ns=int(c.lag_stale_after * NS),
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


def tick_interval(config: Config) -> float | None:
    """How often held spans are checked for a hold that ran out; None with hold 0."""
    hold = config.correlation.hold
    return min(MAX_TICK_S, hold / 10) if hold else None


def trace_identities(config: Config) -> TraceIdentities:
    """Which user each recent trace belongs to, bounded in age and number."""
    c = config.correlation
    return TraceIdentities(int(c.trace_ttl * NS), c.max_traces)


def user_labels(config: Config, team_of: Callable[[User], str]) -> UserLabels | None:
    """How users are named on the usage metrics, or None with usage off."""
    usage = config.usage
    if not usage.enabled:
        return None
    key = config.identity.hash_key  # metric labels hash whenever a key is set
    return UserLabels(
        usage.max_users,
        mode=usage.user_label,
        hasher=EmailHasher(key.get_secret_value().encode()) if key is not None else None,
        hide_emails=config.identity.hash_emails,
        team_of=team_of,
    )


def _hasher(config: Config) -> EmailHasher | None:
    """The keyed hash written on spans instead of emails, when hash_emails is on."""
    identity = config.identity
    if not identity.hash_emails or identity.hash_key is None:
        return None
    return EmailHasher(identity.hash_key.get_secret_value().encode())


def exporter(
    config: Config, on_partial_success: PartialSuccessHook
) -> OtlpGrpcSender | OtlpHttpSender:
    """The last link of the export chain: OTLP over gRPC or over HTTP."""
    section = config.exporter
    if section.protocol == "http":
        return OtlpHttpSender(section, on_partial_success=on_partial_success)
    return OtlpGrpcSender(section, on_partial_success=on_partial_success)


def spool(config: Config) -> Spool | None:
    """The on-disk copy of accepted requests, when exporter.queue.directory is set."""
    queue = config.exporter.queue
    return Spool(queue.directory, queue.max_spool_bytes) if queue.directory else None


def export_queue(
    config: Config, sender: RetrySender, ledger: Ledger, metrics: Metrics
) -> ExportQueue:
    """The bounded queue in front of the downstream; outcomes go to the ledger."""
    queue = config.exporter.queue
    return ExportQueue(
        sender,
        size=queue.size,
        max_bytes=queue.max_bytes,
        consumers=queue.consumers,
        merge_bytes=queue.merge_bytes,
        on_delivered=ledger.delivered,
        on_dropped=ledger.dropped,
        on_requeued=ledger.requeued,
        on_latency=metrics.export_latency.observe,
    )


def redis_share(
    config: Config,
    store: MemorySessionStore,
    clock_ns: Callable[[], int],
    *,
    on_session: Callable[[Session], None],
    on_trace: Callable[[bytes, User], None],
    on_state: Callable[[bool], None],
) -> RedisShare | None:
    """The Redis link between replicas' session tables, or None for ``store: memory``."""
    s = config.sessions
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
    return RedisShare(
        aioredis.Redis.from_url(s.store, **options),
        prefix=s.redis_prefix,
        clock_ns=clock_ns,
        grace_ns=int(EXPIRY_GRACE_S * NS),
        trace_ttl_ns=int(config.correlation.trace_ttl * NS),
        on_session=on_session,
        on_close=store.close,
        on_trace=on_trace,
        on_state=on_state,
    )


def connection_guard(config: Config) -> ConnectionGuard:
    """A listener's guard built from ``connections`` (one per listener)."""
    c = config.connections
    return ConnectionGuard(
        max_connections=c.max_http_connections,
        header_timeout_s=c.header_timeout,
        body_timeout_s=c.body_timeout,
        idle_timeout_s=c.idle_timeout,
    )


def inflight_limit(config: Config) -> int:
    """receiver.max_inflight_bytes, or its default derived from the queue's bound."""
    r = config.receiver
    if r.max_inflight_bytes is not None:
        return r.max_inflight_bytes
    return max(r.max_message_bytes, config.exporter.queue.max_bytes // 4)


def grpc_server(config: Config) -> grpc.aio.Server:
    """The gRPC server for OTLP, the session API and health, with the connection limits."""
    c = config.connections
    return grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.receiver.max_message_bytes),
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


def recorder(config: Config, metrics: Metrics, correlator: Correlator) -> Recorder:
    """What the metrics say about the span path; usage labelled by the directory's teams."""
    return Recorder(
        metrics,
        policy=config.correlation.ambiguous,
        labels=user_labels(config, lambda user: correlator.directory.team_of(user)),
        usage_totals=correlator.usage_totals,
    )


def inflight_budget(config: Config) -> InflightBudget:
    """One budget for both receivers: what they hold before the queue has it."""
    return InflightBudget(inflight_limit(config), config.exporter.queue.retry_after)


def trace_receivers(
    config: Config, pipeline: Pipeline, metrics: Metrics, budget: InflightBudget
) -> tuple[TraceReceiver, HttpTraceReceiver]:
    """The OTLP receivers, gRPC and HTTP, sharing the token and the in-flight budget."""
    auth = receiver_auth(config.receiver.auth)
    return (
        TraceReceiver(pipeline, metrics, auth=auth, budget=budget),
        HttpTraceReceiver(
            pipeline,
            metrics,
            max_message_bytes=config.receiver.max_message_bytes,
            auth=auth,
            budget=budget,
        ),
    )


def session_intake(
    config: Config,
    store: MemorySessionStore,
    metrics: Metrics,
    clock_ns: Callable[[], int],
    *,
    on_stored: Callable[[Session], None],
    on_closed: Callable[[str, str, int], None] | None,
) -> SessionIntake:
    """Where every identity source's sessions are validated and stored."""
    return SessionIntake(
        store,
        metrics,
        default_ttl_s=config.sessions.ttl,
        clock_ns=clock_ns,
        on_stored=on_stored,
        on_closed=on_closed,
    )


def api_token(config: Config) -> BearerToken | None:
    """The session API's token, or None when the API is off."""
    api = config.api
    return BearerToken(api.token.get_secret_value()) if api.enabled and api.token else None


def metrics_token(config: Config) -> BearerToken | None:
    """The token /metrics asks for, or None when it is open."""
    token = config.telemetry.token
    return BearerToken(token.get_secret_value()) if token is not None else None


def directory_watcher(
    config: Config, publish: Callable[[Directory], None]
) -> DirectoryWatcher | None:
    """Loads and reloads the directory file, when one is configured."""
    d = config.directory
    return DirectoryWatcher(d.file, d.reload_interval, publish) if d.file else None


def session_http_api(
    config: Config,
    intake: SessionIntake,
    metrics: Metrics,
    *,
    ready: Callable[[], bool],
    identity_ready: Callable[[], bool],
) -> HttpApi:
    """The session API, the webhooks and (unless telemetry has its own port) health."""
    auth = api_token(config)
    hook = config.webhooks.openwebui
    return HttpApi(
        intake=intake if auth is not None else None,
        auth=auth,
        metrics=metrics,
        max_body_bytes=config.api.max_body_bytes,
        ready=ready,
        identity_ready=identity_ready,
        metrics_auth=metrics_token(config),
        serve_metrics=not config.telemetry.endpoint,
        webhook=OpenWebUIWebhook(intake, hook.secret.get_secret_value(), hook.source_ip, metrics)
        if hook.enabled and hook.secret is not None
        else None,
        rate_limiter=rate_limiter(config.api.rate_limit),
        on_limited=lambda route: metrics.api_rate_limited.add((route,)),
    )
