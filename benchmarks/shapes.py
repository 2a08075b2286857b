"""The service with its defaults and tuned, on the narrow and the diverse workload shape,
against two pass-through proxies in the same run.

Shapes (``benchmarks.loadgen --shape``):

- ``narrow``: 512-span batches from 4 addresses and 7 ports (the headline's shape);
- ``diverse``: every span its own ``ip:port``, 2,048 addresses and 2,048 users across
  the run (4 batches of 512 in turn), one span in 20 without token counts;
- ``identity``: ``diverse`` with the user headers Open WebUI forwards on every span.

Configurations: **defaults** (hold 6 s, exporter gzip; only addresses, the API token
and the push rate limit are set) and **tuned** (hold 0, compression none). Sessions
cover every address. Throughput is spans counted at the sink as they arrive during
the window (released holds included); each row checks at the sink the share of spans
enriched and that no acknowledged span was lost. The decode + re-encode proxy runs
again after the service rows; ratios use the mean of its two runs, and the report
prints how far it moved (this machine's speed drifts by tens of percent within minutes).

Usage: python -m benchmarks.shapes [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    Child,
    LoadRunner,
    Memory,
    Progress,
    ServiceChild,
    gateway_events,
    gateway_sessions,
    iso,
    machine,
    push,
    start_listener,
)
from benchmarks.workload import DIVERSE_ADDRESSES, diverse_address

HOLD_S = 6.0  # correlation.hold's default
DEFAULTS: dict[str, dict[str, Any]] = {"correlation": {}}  # the default hold
TUNED: dict[str, dict[str, Any]] = {}
DEFAULTS_TARGET = 0.5  # x the decode + re-encode proxy, diverse shape
TUNED_TARGET = 0.75
IDENTITY_TOLERANCE = 0.8  # identity batches >= this share of identity-free ones
ENRICHED_TARGET = 0.99
ADDED_P99_TARGET_MS = 5.0
PROXY = "pass-through decoding and re-encoding"
PROXY_AGAIN = f"{PROXY}, again at the end"  # this machine's speed drifts within a run


def diverse_sessions(now_ns: int, count: int = DIVERSE_ADDRESSES) -> list[str]:
    """One user per diverse address, each session covering an hour either side of now."""
    start, end = iso(now_ns - 3600 * 10**9), iso(now_ns + 3600 * 10**9)
    return [
        f'{{"source_ip":"{diverse_address(i)}","user":{{"id":"d{i}","email":"d{i}@example.com",'
        f'"name":"Diverse {i}"}},"start":"{start}","end":"{end}"}}'
        for i in range(count)
    ]


@dataclass(frozen=True, slots=True)
class Plan:
    """Durations of one run."""

    warmup: float
    duration: float
    concurrency: int = 8


NORMAL = Plan(warmup=3.0, duration=10.0)
QUICK = Plan(warmup=1.0, duration=3.0)


@dataclass
class Row:
    """One measured configuration."""

    label: str
    shape: str
    result: dict[str, Any]
    memory: Memory | None = None


@dataclass
class Report:
    """Every row, and the ratios and targets computed from them."""

    machine: str
    rows: list[Row] = field(default_factory=list)
    latency: list[Row] = field(default_factory=list)

    def find(self, label: str, shape: str) -> float:
        """Delivered spans/s of the row ``label`` on ``shape`` (0 when absent)."""
        for row in self.rows:
            if row.label == label and row.shape == shape:
                return float(row.result["delivered_spans_per_s"])
        return 0.0

    def base(self, shape: str) -> float:
        """The decode + re-encode proxy's spans/s on ``shape``: the mean of its runs at
        the start and at the end (0 when absent)."""
        runs = [self.find(label, shape) for label in (PROXY, PROXY_AGAIN)]
        found = [r for r in runs if r]
        return sum(found) / len(found) if found else 0.0

    def drift(self) -> list[str]:
        """How far the proxy moved between the start and the end of the run, per shape."""
        out = []
        for shape in ("narrow", "diverse"):
            start, end = self.find(PROXY, shape), self.find(PROXY_AGAIN, shape)
            if start and end:
                out.append(
                    f"decode + re-encode proxy, {shape}: {start:,.0f} spans/s at the start, "
                    f"{end:,.0f} at the end ({end / start - 1:+.0%}); ratios use their mean"
                )
        return out

    def render(self) -> str:
        """Markdown tables and a PASS/MISS line per target."""
        lines = [f"machine: {self.machine}", ""]
        lines.append(
            "| path | shape | delivered spans/s | vs decode + re-encode proxy | enriched at sink "
            "| acknowledged spans lost | p50 / p99 ms | peak RSS MiB |"
        )
        lines.append("|---|---|---|---|---|---|---|---|")
        for row in self.rows:
            r = row.result
            base = self.base("diverse" if row.shape == "identity" else row.shape)
            ratio = r["delivered_spans_per_s"] / base if base else 0.0
            rss = f"{row.memory.peak_mb:.0f}" if row.memory else ""
            lines.append(
                f"| {row.label} | {row.shape} | {r['delivered_spans_per_s']:,.0f} | {ratio:.2f} "
                f"| {r['enriched_share']:.1%} | {r['spans_lost']:,} "
                f"| {r['latency_ms']['p50']:.2f} / {r['latency_ms']['p99']:.2f} | {rss} |"
            )
        drift = self.drift()
        if drift:
            lines += ["", *drift]
        if self.latency:
            lines += [
                "",
                "| at half the tuned diverse throughput | p50 ms | p99 ms | added p99 ms |",
            ]
            lines.append("|---|---|---|---|")
            floor = self.latency[0].result["latency_ms"]["p99"]
            for row in self.latency:
                lat = row.result["latency_ms"]
                lines.append(
                    f"| {row.label} | {lat['p50']:.2f} | {lat['p99']:.2f} "
                    f"| {lat['p99'] - floor:.2f} |"
                )
        lines += ["", *self.targets()]
        return "\n".join(lines)

    def targets(self) -> list[str]:
        """The issue's targets, PASS or MISS."""
        out = []

        def verdict(ok: bool, text: str) -> None:
            out.append(f"{'PASS' if ok else 'MISS'} {text}")

        base = self.base("diverse")
        if base:
            for label, target in (
                ("service, defaults", DEFAULTS_TARGET),
                ("service, tuned", TUNED_TARGET),
            ):
                got = self.find(label, "diverse") / base
                verdict(got >= target, f"{label}, diverse: {got:.2f} x the proxy (>= {target})")
        for label in ("service, defaults", "service, tuned"):
            plain, named = self.find(label, "diverse"), self.find(label, "identity")
            if plain and named:
                share = named / plain
                verdict(
                    share >= IDENTITY_TOLERANCE,
                    f"{label}: identity batches at {share:.2f} of identity-free ones "
                    f"(>= {IDENTITY_TOLERANCE})",
                )
        for row in self.rows:
            if row.label.startswith("service"):
                r = row.result
                verdict(
                    r["enriched_share"] >= ENRICHED_TARGET and r["spans_lost"] == 0,
                    f"{row.label}, {row.shape}: {r['enriched_share']:.1%} enriched, "
                    f"{r['spans_lost']} lost",
                )
        if len(self.latency) == 3:
            added = (
                self.latency[2].result["latency_ms"]["p99"]
                - self.latency[0].result["latency_ms"]["p99"]
            )
            verdict(
                added <= ADDED_P99_TARGET_MS,
                f"added p99 {added:.2f} ms at half the tuned throughput (<= {ADDED_P99_TARGET_MS})",
            )
        return out


def run(plan: Plan, shapes: Sequence[str]) -> tuple[Report, dict[str, Any]]:
    """Every step; children are stopped whatever happens."""
    progress = Progress()
    report = Report(machine())
    progress(f"machine: {report.machine}")
    children: list[Child] = []
    with tempfile.TemporaryDirectory(prefix="bench-shapes-") as tmp:
        try:
            _steps(plan, shapes, report, Path(tmp), children, progress)
        finally:
            for child in reversed(children):
                child.stop()
    raw = {"rows": [row.__dict__ for row in report.rows], "latency": report.latency}
    return report, raw


def _steps(
    plan: Plan,
    shapes: Sequence[str],
    report: Report,
    logs: Path,
    children: list[Child],
    progress: Progress,
) -> None:
    sink = start_listener("sink", "benchmarks.bench_sink", logs)
    children.append(sink)
    runner = LoadRunner(sink, progress)

    def measure(label: str, target: Child, shape: str, hold_s: float = 0.0) -> Row:
        result = runner.run(
            label,
            target,
            spans=512,
            warmup=plan.warmup + hold_s,
            duration=plan.duration,
            concurrency=plan.concurrency,
            shape=shape,
            settle_s=10.0 + 2 * hold_s,
        )
        row = Row(label, shape, result, target.memory())
        report.rows.append(row)
        return row

    for label, extra in (
        ("pass-through forwarding bytes", ["--bytes"]),
        (PROXY, []),
    ):
        proxy = start_listener(
            label,
            "benchmarks.passthrough",
            logs,
            f"--forward={sink.address}",
            "--tune-malloc",
            *extra,
        )
        children.append(proxy)
        for shape in ("narrow", "diverse"):
            measure(label, proxy, shape)
        if extra:
            proxy.stop()
            children.remove(proxy)
        else:
            passthrough = proxy

    for label, compression, overrides, hold_s in (
        ("service, tuned", "none", TUNED, 0.0),
        ("service, defaults", "gzip", DEFAULTS, HOLD_S),
    ):
        progress(f"start: {label}")
        service = ServiceChild(
            label, sink.address, logs, compression=compression, overrides=overrides
        )
        children.append(service)
        now = time.time_ns()
        push(service, iter(gateway_sessions(now)))
        push(service, iter(diverse_sessions(now)))
        for shape in shapes:
            tuned_diverse = measure(label, service, shape, hold_s)
            if label == "service, tuned" and shape == "diverse":
                rate = tuned_diverse.result["delivered_spans_per_s"] / 2
                for name, target in (
                    ("straight to the sink", sink),
                    (PROXY, passthrough),
                    ("service, tuned", service),
                ):
                    result = runner.run(
                        name,
                        target,
                        spans=512,
                        warmup=plan.warmup,
                        duration=plan.duration,
                        rate=rate,
                        shape="diverse",
                    )
                    report.latency.append(Row(name, "diverse", result))
        service.stop()
        children.remove(service)
    for shape in ("narrow", "diverse"):  # the ratios use the proxy's mean over the run
        measure(PROXY_AGAIN, passthrough, shape)

    for label, compression, overrides, hold_s in (
        ("service, tuned, request events on 4 addresses", "none", TUNED, 0.0),
        ("service, defaults, request events on 4 addresses", "gzip", DEFAULTS, HOLD_S),
    ):
        progress(f"start: {label}")
        service = ServiceChild(
            label, sink.address, logs, compression=compression, overrides=overrides
        )
        children.append(service)
        span_time = time.time_ns()
        push(service, iter(gateway_events(span_time - 1_000_000_000)))
        result = runner.run(
            label,
            service,
            spans=512,
            warmup=plan.warmup + hold_s,
            duration=plan.duration,
            concurrency=plan.concurrency,
            span_time_ns=span_time,
            settle_s=10.0 + 2 * hold_s,
        )
        report.rows.append(Row(label, "narrow", result, service.memory()))
        service.stop()
        children.remove(service)


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows")
    parser.add_argument(
        "--shapes", default="narrow,diverse,identity", help="service shapes, comma-separated"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    args = parser.parse_args(argv)
    report, raw = run(QUICK if args.quick else NORMAL, args.shapes.split(","))
    if args.json is not None:
        args.json.write_text(json.dumps(raw, indent=1, default=str))
    print(report.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
