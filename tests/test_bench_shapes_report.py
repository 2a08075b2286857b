"""The shapes benchmark's arithmetic: ratios against the proxy's mean over the run."""

from __future__ import annotations

from typing import Any

from benchmarks.shapes import PROXY, PROXY_AGAIN, Report, Row


def _result(spans_per_s: float) -> dict[str, Any]:
    return {
        "delivered_spans_per_s": spans_per_s,
        "enriched_share": 1.0,
        "spans_lost": 0,
        "latency_ms": {"p50": 1.0, "p99": 2.0},
    }


def _report(*rows: tuple[str, str, float]) -> Report:
    report = Report("test machine")
    report.rows = [Row(label, shape, _result(rate)) for label, shape, rate in rows]
    return report


def test_ratios_use_the_mean_of_the_proxy_at_the_start_and_at_the_end() -> None:
    report = _report(
        (PROXY, "diverse", 400_000),
        ("service, defaults", "diverse", 150_000),
        ("service, tuned", "diverse", 270_000),
        (PROXY_AGAIN, "diverse", 200_000),
    )
    assert report.base("diverse") == 300_000
    targets = report.targets()
    assert "PASS service, defaults, diverse: 0.50 x the proxy (>= 0.5)" in targets
    assert "PASS service, tuned, diverse: 0.90 x the proxy (>= 0.75)" in targets
    text = report.render()
    assert "400,000 spans/s at the start, 200,000 at the end (-50%)" in text
    assert "| service, defaults | diverse | 150,000 | 0.50 |" in text


def test_a_proxy_run_only_at_the_start_is_the_base_alone() -> None:
    report = _report((PROXY, "narrow", 250_000), ("service, tuned", "narrow", 125_000))
    assert report.base("narrow") == 250_000
    assert report.base("diverse") == 0.0
    assert report.drift() == []
    assert "| service, tuned | narrow | 125,000 | 0.50 |" in report.render()
