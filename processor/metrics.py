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

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

_NS = "user_enricher"

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

Key = tuple[str, ...]


class Counter:
    """A counter family: one number per tuple of label values."""

    __slots__ = ("_fresh", "_values", "doc", "labelnames", "name")

    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str] = (), known: Iterable[Key] = ()
    ) -> None:
        self.name = f"{_NS}_{name}"
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self._values: dict[Key, float] = {}
        self._fresh: set[Key] = set()  # series born since start that no scrape has seen
        self.declare([()] if not self.labelnames else known)

    def declare(self, keys: Iterable[Key]) -> None:
        """Series that exist (at 0) from the start, like the known label values."""
        for key in keys:
            if key not in self._values:
                self._born(key, 0.0)
                self._fresh.discard(key)

    def inc(self, value: float = 1.0) -> None:
        """Add ``value`` to the unlabelled counter."""
        self.add((), value)

    def add(self, key: Key, value: float = 1.0) -> None:
        """Add ``value`` (finite, >= 0) to the series of label values ``key``."""
        if not 0 <= value < math.inf:  # also refuses NaN
            raise ValueError(f"{self.name}: a counter cannot grow by {value!r}")
        values = self._values
        if key in values:
            values[key] += value
        else:
            self._born(key, value)

    def value(self, key: Key = ()) -> float:
        """The current value of one series (0 when it does not exist)."""
        return self._values.get(key, 0.0)

    def _born(self, key: Key, value: float) -> None:
        if len(key) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {key!r}")
        self._values[key] = value
        self._fresh.add(key)

    def family(self, scrape: bool) -> Metric:
        """The exposition of every series; a scrape shows series new to it at 0."""
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        fresh = self._fresh if scrape else ()
        for key, value in self._values.items():
            family.add_metric(key, 0.0 if key in fresh else value)
        if scrape:
            self._fresh.clear()
        return family


class Gauge:
    """A gauge: a value set by events, or a function read at scrape time."""

    __slots__ = ("_function", "_value", "doc", "name")

    def __init__(self, name: str, doc: str) -> None:
        self.name = f"{_NS}_{name}"
        self.doc = doc
        self._value = 0.0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        """Set the value (for gauges that change on events, not with each span)."""
        self._value = value

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from ``function`` whenever the gauge is collected."""
        self._function = function

    def value(self) -> float:
        """The current value."""
        return float(self._function()) if self._function is not None else self._value

    def family(self, scrape: bool) -> Metric:
        """The exposition of the gauge."""
        return GaugeMetricFamily(self.name, self.doc, value=self.value())


class LabelledGauges:
    """Gauges with labels, all read from one function at scrape time."""

    __slots__ = ("_function", "doc", "labels", "name")

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name = f"{_NS}_{name}"
        self.doc = doc
        self.labels = list(labels)
        self._function: Callable[[], Mapping[tuple[str, ...], float]] = dict

    def set_function(self, function: Callable[[], Mapping[tuple[str, ...], float]]) -> None:
        """Read every series (label values -> value) from ``function`` when collected."""
        self._function = function

    def value(self, key: tuple[str, ...]) -> float:
        """One series' current value (0 when absent)."""
        return float(self._function().get(key, 0.0))

    def family(self, scrape: bool) -> Metric:
        """The exposition of every series."""
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self._function().items():
            family.add_metric(list(key), float(value))
        return family


class Histogram:
    """A histogram with fixed bucket bounds (cumulative counts in the exposition)."""

    __slots__ = ("_bounds", "_counts", "_sum", "doc", "name")

    def __init__(self, name: str, doc: str, buckets: Sequence[float]) -> None:
        self.name = f"{_NS}_{name}"
        self.doc = doc
        self._bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self._counts)

    def family(self, scrape: bool) -> Metric:
        """Cumulative buckets, sum and count."""
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, math.inf), self._counts, strict=True):
            cumulative += count
            buckets.append((_bound(bound), cumulative))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self._sum)


def _bound(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


Family = Counter | Gauge | LabelledGauges | Histogram


class _View(Collector):
    """The families as a collector: ``scrape`` applies the first-scrape-at-0 rule."""

    def __init__(self, families: Callable[[], Iterable[Family]], *, scrape: bool) -> None:
        self._families = families
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        """Every family's exposition."""
        for family in self._families():
            yield family.family(self._scrape)


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
        self.registry.register(_View(self.families, scrape=False))
        self._scrape_registry = CollectorRegistry()
        self._scrape_registry.register(_View(self.families, scrape=True))
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
