"""A/B of the service against the pass-through, alternating, for quick comparisons.

Usage: python -m benchmarks.ab [--rounds 3] [--seconds 4] [--usage/--no-usage]

Runs a sink, the pass-through and the service (hold 0, compression none, the
gateway sessions loaded), then alternates the same closed-loop load between the
two ``rounds`` times and prints each round and the median ratio. The machine
is shared, so only figures from one run are compared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.harness import (
    Child,
    LoadRunner,
    Progress,
    ServiceChild,
    gateway_sessions,
    push,
    start_listener,
)


def main() -> None:
    """Print spans/s of each side per round, and the median ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--usage", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    children: list[Child] = []
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp)
        try:
            sink = start_listener("sink", "benchmarks.bench_sink", logs)
            children.append(sink)
            passthrough = start_listener(
                "pass-through",
                "benchmarks.passthrough",
                logs,
                f"--forward={sink.address}",
                "--tune-malloc",
            )
            children.append(passthrough)
            service = ServiceChild(
                "service", sink.address, logs, compression="none", usage=args.usage
            )
            children.append(service)
            push(service, iter(gateway_sessions(time.time_ns())))
            runner = LoadRunner(sink, Progress())  # progress lines on stderr
            ratios: list[float] = []
            cpu_ratios: list[float] = []
            for round_ in range(args.rounds):
                got, cpu = {}, {}
                for name, target in (("pass-through", passthrough), ("service", service)):
                    result = runner.run(
                        name, target, spans=512, warmup=1.0, duration=args.seconds, concurrency=8
                    )
                    got[name] = result["delivered_spans_per_s"]
                    spans = got[name] * args.seconds
                    cpu[name] = result["target_cpu_s"] / spans * 1e6 if spans else 0.0
                ratio = got["service"] / got["pass-through"]
                ratios.append(ratio)
                cpu_ratios.append(cpu["pass-through"] / cpu["service"])
                print(
                    f"round {round_ + 1}: pass-through {got['pass-through']:,.0f} spans/s "
                    f"({cpu['pass-through']:.2f} us CPU/span), service {got['service']:,.0f} "
                    f"({cpu['service']:.2f}), ratio {ratio:.2f}, CPU ratio {cpu_ratios[-1]:.2f}",
                    flush=True,
                )
            print(
                f"median ratio {statistics.median(ratios):.2f}, "
                f"CPU ratio {statistics.median(cpu_ratios):.2f}"
            )
        finally:
            for child in reversed(children):
                child.stop()


if __name__ == "__main__":
    main()
