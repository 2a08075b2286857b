"""Every Prometheus metric the service exports, declared in one place.

Values are plain numbers that the span path adds to once per batch; Prometheus
reads them at scrape time through a collector (``prometheus_client`` only
renders the exposition format). Gauges that mirror a component's size read it
at scrape time too, so nothing is set per span.

Counter series whose label values are known in advance (and unlabelled ones)
exist at 0 from the start. A series born later, when its label values first
occur (one user's first call, the first spans dropped with a new code), is
exposed at 0 on the first scrape after its birth and with its value from the
next one. Prometheus computes ``increase()`` and ``rate()`` from differences
between samples, so a series whose first sample is already 14 would count as
no increase at all; exposed at 0 first, its first increment is counted. (With
two Prometheus servers scraping one instance, only the first to scrape sees the
0.)

No ``*_created`` series are exposed. ``process_*`` and ``python_*`` metrics
come from ``prometheus_client``'s standard collectors.

The registry is injected so each test (and each in-process demo service) gets
a fresh one. Names follow the Prometheus conventions (``_total`` for counters,
base units in the name).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)

from processor.metrics.kinds import Counter, Family, Gauge, Histogram, LabelledGauges, View

# Label values known in advance: their series exist (at 0) from the start.
REQUEST_OUTCOMES = ("ok", "empty", "invalid", "backpressure", "unauthenticated", "error")
RELEASE_REASONS = ("early", "deadline", "forced")
ENRICHED = (
    ("span", "exact"),
    ("trace", "exact"),
    ("session", "high"),
    ("directory", "exact"),
    ("directory", "high"),
)
PUSH_ROUTES = ("http", "grpc", "webhook")
PUSH_REJECTIONS = ("unauthenticated", "invalid", "content_type", "too_large")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """Holds the service's metrics.

    ``registry`` shows the current values (tests and in-process readers use it);
    :meth:`scrape` renders what ``/metrics`` serves.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Run before every read (scrape or registry): folds in what the span path
        # summed since (LLM usage), so the span path never touches a series.
        self._before_read: list[Callable[[], None]] = []
        self.registry = registry if registry is not None else CollectorRegistry()
        self.registry.register(View(self.families, scrape=False))
        self._scrape_registry = CollectorRegistry()
        self._scrape_registry.register(View(self.families, scrape=True))
        for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self._scrape_registry.register(standard)
        self._declare_pipeline()
        self._declare_export()
        self._declare_identity()
        self._declare_usage()

    def before_read(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` before the metrics are read, each time."""
        self._before_read.append(hook)

    def families(self) -> list[Family]:
        """Every declared metric, in declaration order."""
        for hook in self._before_read:
            hook()
        kinds = Counter | Gauge | LabelledGauges | Histogram
        return [v for v in vars(self).values() if isinstance(v, kinds)]

    def scrape(self) -> bytes:
        """The text exposition ``/metrics`` serves (process metrics included)."""
        return generate_latest(self._scrape_registry)

    def _declare_pipeline(self) -> None:
        self.requests_received = Counter(
            "requests_received",
            "OTLP Export requests received",
            ["outcome"],
            known=[(o,) for o in REQUEST_OUTCOMES],
        )
        self.spans_received = Counter("spans_received", "Spans received")
        self.spans_enriched = Counter(
            "spans_enriched",
            "Spans given a user, by how the user was found and how sure that is",
            ["method", "confidence"],
            known=ENRICHED,
        )
        self.spans_unmatched = Counter(
            "spans_unmatched",
            "Spans forwarded with no attribution: no identity, session, event or directory entry",
        )
        self.spans_ambiguous = Counter(
            "spans_ambiguous",
            "Spans several users could have sent, by the ambiguity policy applied",
            ["policy"],
        )
        self.spans_no_address = Counter(
            "spans_no_address", "Unmatched spans that had no usable source address"
        )
        self.spans_held = Counter("spans_held", "Spans held to wait for their identity")
        self.spans_released = Counter(
            "spans_released",
            "Held spans released: early (identity arrived), deadline, or forced (buffer full)",
            ["reason"],
            known=[(r,) for r in RELEASE_REASONS],
        )
        self.spans_holding = Gauge("spans_holding", "Spans currently held")
        self.held_capacity = Gauge(
            "held_capacity_spans", "Spans the hold buffer takes before it forces the oldest out"
        )
        self.enrich_failures = Counter(
            "enrich_failures", "Spans whose attribution raised; forwarded as they came (fail open)"
        )

    def _declare_export(self) -> None:
        self.spans_exported = Counter("spans_exported", "Spans acknowledged by the downstream")
        self.spans_dropped = Counter(
            "spans_dropped",
            "Spans the downstream refused permanently (not retried), by status",
            ["code"],
        )
        self.spans_lost = Counter(
            "spans_lost", "Spans still queued at shutdown with no spool configured"
        )
        self.export_failures = Counter(
            "export_failures", "Export requests that failed after retries", ["code"]
        )
        self.export_retries = Counter("export_retries", "Export attempts retried", ["code"])
        self.export_requeued = Counter(
            "export_requeued",
            "Batches whose retries ran out and went back to the end of the queue",
        )
        self.export_latency = Histogram(
            "export_latency_seconds",
            "Time from entering the export queue to the downstream's acknowledgement, "
            "retries included",
            LATENCY_BUCKETS,
        )
        self.queue_batches = Gauge("queue_batches", "Batches waiting for or being sent downstream")
        self.queue_bytes = Gauge("queue_bytes", "Bytes in the export queue")
        self.queue_capacity_batches = Gauge(
            "queue_capacity_batches", "Batches the export queue takes (exporter.queue.size)"
        )
        self.queue_capacity_bytes = Gauge(
            "queue_capacity_bytes", "Bytes the export queue takes (exporter.queue.max_bytes)"
        )
        self.inflight_bytes = Gauge(
            "receiver_inflight_bytes", "Bytes requests being read or decoded hold, all receivers"
        )
        self.inflight_capacity_bytes = Gauge(
            "receiver_inflight_capacity_bytes",
            "Bytes requests in flight may hold (receiver.max_inflight_bytes)",
        )
        self.spool_requests = Gauge("spool_requests", "Requests kept in the spool until delivered")
        self.spool_bytes = Gauge("spool_bytes", "Bytes of the spool on disk")
        self.spool_capacity_bytes = Gauge(
            "spool_capacity_bytes",
            "Bytes the spool takes (exporter.queue.max_spool_bytes; 0 without a spool)",
        )
        self.spool_quarantined = Counter(
            "spool_quarantined",
            "Spool files found corrupt or truncated at start-up and moved aside",
        )

    def _declare_identity(self) -> None:
        self.trace_identities = Gauge("trace_identities", "Traces whose user is known")
        self.learned_lag = LabelledGauges(
            "learned_lag_seconds",
            "Learned event -> span lag per identity-source address and event kind "
            "(median and 99th percentile)",
            ["address", "kind", "quantile"],
        )
        self.learned_lag_samples = LabelledGauges(
            "learned_lag_samples",
            "Spans whose true event the learned lag rests on, per address and event kind "
            "(decayed); a source is absent while window membership decides",
            ["address", "kind"],
        )
        self.sessions_active = Gauge("sessions_active", "Sessions held in the session store")
        self.sessions_pushed = Counter(
            "sessions_pushed",
            "Sessions accepted through the session API",
            ["via"],
            known=[(via,) for via in PUSH_ROUTES],
        )
        self.session_push_rejected = Counter(
            "session_push_rejected",
            "Session pushes refused",
            ["via", "reason"],
            known=[(via, reason) for via in ("http", "grpc") for reason in PUSH_REJECTIONS],
        )
        self.sessions_expired = Counter("sessions_expired", "Sessions dropped after their end")
        self.webhook_events = Counter(
            "webhook_events",
            "Open WebUI webhook calls, by event name (known names, legacy, other) and outcome",
            ["event", "outcome"],
        )
        self.api_rate_limited = Counter(
            "api_rate_limited",
            "HTTP API requests refused with 429 because their client exceeded api.rate_limit",
            ["route"],  # sessions | webhook
            known=[("sessions",), ("webhook",)],
        )
        self.store_connected = Gauge(
            "session_store_connected",
            "1 while the session store is usable: always for the in-memory store, "
            "while connected and in sync for Redis",
        )

    def _declare_usage(self) -> None:
        usage = ["user", "team", "provider", "model"]
        self.llm_requests = Counter(
            "llm_requests", "LLM calls that passed, by user, team, provider, model", usage
        )
        self.llm_tokens = Counter(
            "llm_tokens",
            "LLM tokens, by user, team, provider, model and direction",
            [*usage, "direction"],
        )
        self.llm_cost = Counter(
            "llm_cost_usd",
            "LLM cost in USD: the gateway's price, else the configured price table",
            usage,
        )
        self.llm_errors = Counter(
            "llm_errors", "LLM calls answered with an HTTP status >= 400", usage
        )
