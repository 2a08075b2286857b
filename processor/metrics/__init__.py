"""The service's Prometheus metrics: the kinds (plain numbers) and the one registry."""

from processor.metrics.kinds import Counter, Gauge, Histogram, LabelledGauges
from processor.metrics.registry import (
    ENRICHED,
    LATENCY_BUCKETS,
    PUSH_REJECTIONS,
    PUSH_ROUTES,
    RELEASE_REASONS,
    REQUEST_OUTCOMES,
    Metrics,
)

__all__ = [
    "ENRICHED",
    "LATENCY_BUCKETS",
    "PUSH_REJECTIONS",
    "PUSH_ROUTES",
    "RELEASE_REASONS",
    "REQUEST_OUTCOMES",
    "Counter",
    "Gauge",
    "Histogram",
    "LabelledGauges",
    "Metrics",
]
