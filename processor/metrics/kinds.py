"""The metric kinds the service keeps: plain numbers, rendered as families at read time."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

# Every metric name starts with this.
_NS = "user_enricher"

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


class View(Collector):
    """The families as a collector: ``scrape`` applies the first-scrape-at-0 rule."""

    def __init__(self, families: Callable[[], Iterable[Family]], *, scrape: bool) -> None:
        self._families = families
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        """Every family's exposition."""
        for family in self._families():
            yield family.family(self._scrape)
