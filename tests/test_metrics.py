"""The metrics module: plain numbers per batch, exposed at scrape time, first samples at 0."""

from __future__ import annotations

import asyncio
import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from processor.errors import DownstreamError
from processor.export.queue import Batch, ExportQueue
from processor.metrics import Counter, Histogram, Metrics


def scraped(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape of ``metrics``, as {(sample name, sorted labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(metrics.scrape().decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_a_series_born_after_start_is_scraped_at_zero_first() -> None:
    """A new user's first call shows as 0, then as its value, so increase() counts it."""
    metrics = Metrics()
    key = ("mike.chen@example.com", "none", "anthropic", "claude-sonnet-4")
    labels = tuple(sorted(zip(metrics.llm_cost.labelnames, key, strict=True)))
    series = ("user_enricher_llm_cost_usd_total", labels)
    assert series not in scraped(metrics)
    metrics.llm_cost.add(key, 0.25)
    assert scraped(metrics)[series] == 0
    assert scraped(metrics)[series] == 0.25
    metrics.llm_cost.add(key, 0.5)
    assert scraped(metrics)[series] == 0.75


def test_known_and_unlabelled_series_exist_from_the_start_with_their_values() -> None:
    """Series declared up front are scraped at their value at once (they existed at 0)."""
    metrics = Metrics()
    metrics.spans_received.inc(3)
    metrics.requests_received.add(("ok",))
    samples = scraped(metrics)
    assert samples[("user_enricher_spans_received_total", ())] == 3
    assert samples[("user_enricher_requests_received_total", (("outcome", "ok"),))] == 1
    assert samples[("user_enricher_requests_received_total", (("outcome", "invalid"),))] == 0
    assert samples[("user_enricher_spans_released_total", (("reason", "forced"),))] == 0


def test_the_registry_shows_current_values_without_the_scrape_rule() -> None:
    """In-process readers (tests, the demo) see a new series' value at once."""
    metrics = Metrics()
    metrics.spans_dropped.add(("INVALID_ARGUMENT",), 14)
    value = metrics.registry.get_sample_value(
        "user_enricher_spans_dropped_total", {"code": "INVALID_ARGUMENT"}
    )
    assert value == 14


def test_scrape_has_process_metrics_and_no_created_series() -> None:
    """/metrics carries process_* and python_* and never a *_created sample."""
    names = {name for name, _ in scraped(Metrics())}
    assert "process_resident_memory_bytes" in names
    assert "python_info" in names
    assert not [name for name in names if name.endswith("_created")]


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_a_counter_refuses_what_a_counter_cannot_do(value: float) -> None:
    """Counters only grow by finite, non-negative amounts."""
    with pytest.raises(ValueError, match="cannot grow"):
        Counter("probe", "probe").inc(value)


def test_a_counter_refuses_the_wrong_number_of_labels() -> None:
    """A label tuple of the wrong length is a bug, caught at the series' birth."""
    with pytest.raises(ValueError, match="expected labels"):
        Counter("probe", "probe", ["a", "b"]).add(("x",))


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    """An observation equal to a bound counts in that bucket (Prometheus ``le``)."""
    histogram = Histogram("probe_seconds", "probe", [0.1, 1.0])
    for value in (0.1, 0.5, 5.0):
        histogram.observe(value)
    family = histogram.family(scrape=True)
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1, "1.0": 2, "+Inf": 3}
    assert histogram.count == 3


def test_gauges_read_their_component_at_scrape_time() -> None:
    """A gauge bound to a function shows the function's value whenever it is scraped."""
    metrics = Metrics()
    size = [0]
    metrics.queue_batches.set_function(lambda: size[0])
    size[0] = 7
    assert scraped(metrics)[("user_enricher_queue_batches", ())] == 7


class Flaky:
    """Fails the first send with a retryable error, then succeeds; moves ``clock`` per send."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.sends = 0

    async def send(self, payload: bytes) -> None:
        self.sends += 1
        self.clock[0] += 2.0
        await asyncio.sleep(0)
        if self.sends == 1:
            raise DownstreamError("busy", code="UNAVAILABLE", retryable=True)


async def test_export_latency_counts_from_the_first_queueing_through_retries() -> None:
    """The latency of a delivered batch runs from its first entry, requeues included."""
    clock = [100.0]
    latencies: list[float] = []
    delivered: list[Batch] = []
    queue = ExportQueue(
        Flaky(clock),
        size=10,
        max_bytes=1 << 20,
        consumers=1,
        on_delivered=delivered.append,
        on_dropped=lambda b, e: None,
        on_latency=latencies.append,
        clock=lambda: clock[0],
    )
    queue.start()
    queue.put(Batch(b"x", 1))
    assert await queue.drain(10.0) == []
    assert len(delivered) == 1
    assert latencies == [4.0]  # two sends of 2 s each, the first one requeued
