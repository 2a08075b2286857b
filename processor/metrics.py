"""Every Prometheus metric the service exports, declared in one place.

The registry is injected so each test (and each in-process demo service) gets
a fresh one. Metric names follow the Prometheus conventions (``_total`` for
counters, base units in the name).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_NS = "user_enricher"


class Metrics:
    """Holds the service's metrics, all registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests_received = Counter(
            f"{_NS}_requests_received", "OTLP Export requests received", ["outcome"], registry=r
        )
        self.spans_received = Counter(f"{_NS}_spans_received", "Spans received", registry=r)
        self.spans_enriched = Counter(
            f"{_NS}_spans_enriched",
            "Spans given a user, by how the user was found and how sure that is",
            ["method", "confidence"],
            registry=r,
        )
        self.spans_unmatched = Counter(
            f"{_NS}_spans_unmatched",
            "Spans forwarded with no attribution: no identity, session, event or directory entry",
            registry=r,
        )
        self.spans_ambiguous = Counter(
            f"{_NS}_spans_ambiguous",
            "Spans several users could have sent, by the ambiguity policy applied",
            ["policy"],
            registry=r,
        )
        self.spans_no_address = Counter(
            f"{_NS}_spans_no_address",
            "Unmatched spans that had no usable source address",
            registry=r,
        )
        self.spans_held = Counter(
            f"{_NS}_spans_held", "Spans held to wait for their identity", registry=r
        )
        self.spans_released = Counter(
            f"{_NS}_spans_released",
            "Held spans released: early (identity arrived), deadline, or forced (buffer full)",
            ["reason"],
            registry=r,
        )
        self.spans_holding = Gauge(f"{_NS}_spans_holding", "Spans currently held", registry=r)
        self.trace_identities = Gauge(
            f"{_NS}_trace_identities", "Traces whose user is known", registry=r
        )
        self.enrich_failures = Counter(
            f"{_NS}_enrich_failures",
            "Spans whose attribution raised; forwarded as they came (fail open)",
            registry=r,
        )
        self.spans_dropped = Counter(
            f"{_NS}_spans_dropped",
            "Spans the downstream refused permanently (not retried), by status",
            ["code"],
            registry=r,
        )
        self.spans_lost = Counter(
            f"{_NS}_spans_lost",
            "Spans still queued at shutdown with no spool configured",
            registry=r,
        )
        self.export_requeued = Counter(
            f"{_NS}_export_requeued",
            "Batches whose retries ran out and went back to the end of the queue",
            registry=r,
        )
        self.queue_batches = Gauge(
            f"{_NS}_queue_batches", "Batches waiting for or being sent downstream", registry=r
        )
        self.queue_bytes = Gauge(f"{_NS}_queue_bytes", "Bytes in the export queue", registry=r)
        self.spool_requests = Gauge(
            f"{_NS}_spool_requests", "Requests kept in the spool until delivered", registry=r
        )
        self.spool_bytes = Gauge(f"{_NS}_spool_bytes", "Bytes of the spool on disk", registry=r)
        self.spool_quarantined = Counter(
            f"{_NS}_spool_quarantined",
            "Spool files found corrupt or truncated at start-up and moved aside",
            registry=r,
        )
        self.spans_exported = Counter(
            f"{_NS}_spans_exported", "Spans acknowledged by the downstream", registry=r
        )
        self.export_failures = Counter(
            f"{_NS}_export_failures",
            "Export requests that failed after retries",
            ["code"],
            registry=r,
        )
        self.export_retries = Counter(
            f"{_NS}_export_retries", "Export attempts retried", ["code"], registry=r
        )
        self.export_latency = Histogram(
            f"{_NS}_export_latency_seconds",
            "Time to get one batch acknowledged by the downstream, retries included",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.sessions_active = Gauge(
            f"{_NS}_sessions_active", "Sessions held in the session store", registry=r
        )
        self.sessions_pushed = Counter(
            f"{_NS}_sessions_pushed",
            "Sessions accepted through the session API",
            ["via"],
            registry=r,
        )
        self.session_push_rejected = Counter(
            f"{_NS}_session_push_rejected",
            "Session pushes refused",
            ["via", "reason"],
            registry=r,
        )
        self.webhook_events = Counter(
            f"{_NS}_webhook_events",
            "Open WebUI webhook calls, by event name (known names, legacy, other) and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.api_rate_limited = Counter(
            f"{_NS}_api_rate_limited",
            "HTTP API requests refused with 429 because their client exceeded api.rate_limit",
            ["route"],  # sessions | webhook
            registry=r,
        )
        self.store_connected = Gauge(
            f"{_NS}_session_store_connected",
            "1 while the shared session store (Redis) is connected and in sync",
            registry=r,
        )
        usage = ["user", "team", "provider", "model"]
        self.llm_requests = Counter(
            f"{_NS}_llm_requests",
            "LLM calls that passed, by user, team, provider, model",
            usage,
            registry=r,
        )
        self.llm_tokens = Counter(
            f"{_NS}_llm_tokens",
            "LLM tokens, by user, team, provider, model and direction",
            [*usage, "direction"],
            registry=r,
        )
        self.llm_cost = Counter(
            f"{_NS}_llm_cost_usd",
            "LLM cost in USD: the gateway's price, else the configured price table",
            usage,
            registry=r,
        )
        self.llm_errors = Counter(
            f"{_NS}_llm_errors",
            "LLM calls answered with an HTTP status >= 400",
            usage,
            registry=r,
        )
        self.sessions_expired = Counter(
            f"{_NS}_sessions_expired", "Sessions dropped after their end", registry=r
        )
