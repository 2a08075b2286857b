"""Gauges that mirror a component's size: bound once, read at scrape time."""

from __future__ import annotations

from collections.abc import Callable

from processor.app.config import Config
from processor.correlate.correlator import Correlator
from processor.correlate.lag import LagLearner
from processor.export.queue import ExportQueue
from processor.export.spool import Spool
from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.traces import TraceIdentities
from processor.metrics import Metrics
from processor.receive.budget import InflightBudget

_NS = 1_000_000_000


def bind_gauges(
    metrics: Metrics,
    config: Config,
    *,
    correlator: Correlator,
    queue: ExportQueue,
    inflight: InflightBudget,
    spool: Spool | None,
    store: MemorySessionStore,
    traces: TraceIdentities,
    shared_store: bool,
    clock_ns: Callable[[], int],
) -> None:
    """Point each size gauge at what it measures, and set the fixed capacities."""
    m, queue_config = metrics, config.exporter.queue
    m.spans_holding.set_function(lambda: correlator.held)
    m.held_capacity.set(config.correlation.max_held_spans)
    m.queue_batches.set_function(lambda: len(queue))
    m.queue_bytes.set_function(lambda: queue.bytes)
    m.inflight_bytes.set_function(lambda: inflight.used)
    m.inflight_capacity_bytes.set(inflight.limit)
    m.queue_capacity_batches.set(queue_config.size)
    m.queue_capacity_bytes.set(queue_config.max_bytes)
    if spool is not None:
        m.spool_requests.set_function(lambda: len(spool))
        m.spool_bytes.set_function(lambda: spool.bytes_used)
        m.spool_capacity_bytes.set(queue_config.max_spool_bytes)
    m.sessions_active.set_function(lambda: len(store))
    m.trace_identities.set_function(lambda: len(traces))
    lags = correlator.lags
    if lags is not None:
        m.learned_lag.set_function(lambda: lag_quantiles(lags, clock_ns()))
        m.learned_lag_samples.set_function(
            lambda: {key: s.samples for key, s in lags.summaries(clock_ns()).items()}
        )
    # The in-memory store is always usable; Redis reports its state as it changes.
    m.store_connected.set(0 if shared_store else 1)


def lag_quantiles(lags: LagLearner, now_ns: int) -> dict[tuple[str, ...], float]:
    """The learned lag's median and 99th percentile per address and event kind, in seconds."""
    out: dict[tuple[str, ...], float] = {}
    for (ip, kind), summary in lags.summaries(now_ns).items():
        out[(ip, kind, "0.5")] = summary.p50_ns / _NS
        out[(ip, kind, "0.99")] = summary.p99_ns / _NS
    return out
