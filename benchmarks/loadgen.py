"""OTLP/gRPC load generator: the same pre-encoded AgentGateway batch, over and over.

The batch is ``benchmarks.workload.gateway_batch`` with its timestamps moved to
now (so sessions pushed for "now" cover its spans) and its first span id set to
``bench_sink.MARKER`` + a sequence number, patched per request: the sink reports
when each request arrived, so this process counts the spans delivered during the
measured window and times each request from its send to its delivery.

Two modes:

- closed loop (default): ``--concurrency`` calls always in flight;
- open loop (``--rate`` spans/s): one call every ``spans / rate`` seconds on a fixed
  schedule, whatever the answers do (no coordinated omission), at most
  ``--max-in-flight`` at once.

After ``--warmup`` seconds, one window of ``--duration`` seconds is measured. With
``--target-pid`` the target's CPU time (utime + stime from /proc/<pid>/stat) is read at
both ends of the window; ``--sink-pid`` does the same for the sink.

Prints one JSON object on stdout.

Usage: python -m benchmarks.loadgen --target HOST:PORT --sink HOST:PORT [--spans 512]
       [--concurrency 8 | --rate SPANS_PER_S] [--warmup 2] [--duration 10] [--target-pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.bench_sink import DRAIN_METHOD, MARKER, SEARCH_BYTES, SPAN_ID_PREFIX
from benchmarks.workload import T0, diverse_batch, gateway_batch, identity_batch

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MAX_MESSAGE = 64 << 20
_TICK_S = 1 / os.sysconf("SC_CLK_TCK")
_MS = 1e6


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (its threads included), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values_ns: list[int]) -> dict[str, float]:
    """Percentiles of nanosecond durations, in milliseconds."""
    ordered = sorted(v / _MS for v in values_ns)
    out = {f"p{q:g}": percentile(ordered, q) for q in (50, 90, 99, 99.9)}
    out["max"] = ordered[-1] if ordered else 0.0
    out["mean"] = sum(ordered) / len(ordered) if ordered else 0.0
    out["count"] = float(len(ordered))
    return out


SHAPES = ("narrow", "diverse", "identity")
PARTS = 4  # the diverse shapes rotate over this many batches (4 x 512 addresses)


def shape_batches(shape: str, spans: int, seed: int) -> list[bytes]:
    """The encoded requests a run of ``shape`` rotates over."""
    if shape == "narrow":
        return [gateway_batch(spans, seed)]
    build = diverse_batch if shape == "diverse" else identity_batch
    return [build(spans, seed, part) for part in range(PARTS)]


class Rotation:
    """The requests of one shape, sent in turn."""

    def __init__(self, shape: str, spans: int, seed: int, now_ns: int) -> None:
        self.batches = [Batch(raw, now_ns) for raw in shape_batches(shape, spans, seed)]
        self.spans = spans
        self.size = self.batches[0].size

    def payload(self, seq: int) -> bytes:
        """The request carrying sequence number ``seq``."""
        return self.batches[seq % len(self.batches)].payload(seq)


_SLOT = b"\xee\xd1\xee\xd1"  # where each request's sequence number goes


class Batch:
    """One pre-encoded request whose sequence number is patched in per send: into the
    first span's id (after ``MARKER``, for the sink) and into the first 4 bytes of
    every trace id, so that no two requests share a trace, as on a real gateway."""

    def __init__(self, raw: bytes, now_ns: int) -> None:
        request = ExportTraceServiceRequest.FromString(raw)
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        # gateway_batch starts its spans 1 ms apart from T0; the last one now starts now.
        shift = now_ns - T0 - spans * 1_000_000
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    span.start_time_unix_nano += shift
                    span.end_time_unix_nano += shift
                    span.trace_id = _SLOT + span.trace_id[4:]
        request.resource_spans[0].scope_spans[0].spans[0].span_id = MARKER + _SLOT
        data = request.SerializeToString()
        if data.find(SPAN_ID_PREFIX + MARKER + _SLOT, 0, SEARCH_BYTES) < 0:
            raise RuntimeError("marker not found in the encoded batch")
        self._pieces = data.split(_SLOT)
        if len(self._pieces) != spans + 2:  # the pattern also occurs elsewhere
            raise RuntimeError("sequence slots do not line up; pick another pattern")
        self.spans = spans
        self.size = len(data)

    def payload(self, seq: int) -> bytes:
        """The request carrying sequence number ``seq``."""
        return seq.to_bytes(4, "big").join(self._pieces)


@dataclass
class Window:
    """The measured window (monotonic ns) and CPU readings at its ends."""

    start_ns: int
    end_ns: int
    cpu: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Run:
    """Per-request records: sequence -> (sent ns, answered ns, status name)."""

    sent: dict[int, tuple[int, int, str]] = field(default_factory=dict)
    late_ns: list[int] = field(default_factory=list)  # open loop: send time - schedule
    skipped: int = 0  # open loop: slots dropped because max-in-flight was reached
    spans: int = 0  # per request


Call = Callable[[bytes], Awaitable[None]]


async def _send(call: Call, batch: Rotation, seq: int, run: Run) -> str:
    payload = batch.payload(seq)
    t0 = time.monotonic_ns()
    try:
        await call(payload)
        code = "OK"
    except grpc.aio.AioRpcError as exc:
        code = exc.code().name
    run.sent[seq] = (t0, time.monotonic_ns(), code)
    return code


async def closed_loop(
    call: Call, batch: Rotation, seqs: Counter[str], base: int, stop_ns: int, workers: int, run: Run
) -> None:
    """``workers`` calls in flight until ``stop_ns``."""

    async def worker() -> None:
        while time.monotonic_ns() < stop_ns:
            seq = base + seqs["next"]
            seqs["next"] += 1
            if await _send(call, batch, seq, run) != "OK":
                await asyncio.sleep(0.01)  # backpressure or failure: do not spin

    await asyncio.gather(*(worker() for _ in range(workers)))


async def open_loop(
    call: Call,
    batch: Rotation,
    base: int,
    start_ns: int,
    stop_ns: int,
    rate: float,
    max_in_flight: int,
    run: Run,
) -> None:
    """One call per ``batch.spans / rate`` seconds from ``start_ns`` to ``stop_ns``."""
    interval_ns = int(batch.spans / rate * 1e9)
    in_flight: set[asyncio.Task[str]] = set()
    i = 0
    while (due := start_ns + i * interval_ns) < stop_ns:
        wait = due - time.monotonic_ns()
        if wait > 0:
            await asyncio.sleep(wait / 1e9)
        i += 1
        if len(in_flight) >= max_in_flight:
            run.skipped += 1
            continue
        run.late_ns.append(max(0, time.monotonic_ns() - due))
        task = asyncio.get_running_loop().create_task(_send(call, batch, base + i, run))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)


async def _read_cpu_at(at_ns: int, pids: dict[str, int], into: dict[str, list[float]]) -> None:
    wait = at_ns - time.monotonic_ns()
    if wait > 0:
        await asyncio.sleep(wait / 1e9)
    for name, pid in pids.items():
        into.setdefault(name, []).append(cpu_seconds(pid))
    into.setdefault("loadgen", []).append(time.process_time())
    into.setdefault("wall", []).append(time.monotonic_ns() / 1e9)


async def _drain_sink(channel: grpc.aio.Channel) -> dict[str, Any]:
    drain = channel.unary_unary(DRAIN_METHOD, request_serializer=None, response_deserializer=None)
    body: bytes = await drain(b"", timeout=10.0)
    result: dict[str, Any] = json.loads(body)
    return result


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run the load and return the figures."""
    batch = Rotation(args.shape, args.spans, args.seed, args.span_time_ns or time.time_ns())
    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.max_receive_message_length", MAX_MESSAGE),
    ]
    target = grpc.aio.insecure_channel(args.target, options=options)
    sink = grpc.aio.insecure_channel(args.sink, options=options)
    export = target.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)

    async def call(payload: bytes) -> None:
        await export(payload, timeout=30.0)

    await asyncio.wait_for(target.channel_ready(), 10)
    await _drain_sink(sink)  # forget earlier runs
    base = (args.run_id & 0xFF) << 24
    run = Run(spans=batch.spans)
    begin = time.monotonic_ns()
    window = Window(
        begin + int(args.warmup * 1e9), begin + int((args.warmup + args.duration) * 1e9)
    )
    pids = {
        name: pid for name, pid in (("target", args.target_pid), ("sink", args.sink_pid)) if pid
    }
    readers = [
        asyncio.get_running_loop().create_task(_read_cpu_at(at, pids, window.cpu))
        for at in (window.start_ns, window.end_ns)
    ]
    if args.rate > 0:
        await open_loop(call, batch, base, begin, window.end_ns, args.rate, args.max_in_flight, run)
    else:
        seqs: Counter[str] = Counter()
        await closed_loop(call, batch, seqs, base, window.end_ns, args.concurrency, run)
    await asyncio.gather(*readers)
    arrivals = await _collect_arrivals(sink, run, base, args.settle)
    await target.close()
    await sink.close()
    return _figures(args, batch, run, window, arrivals)


@dataclass
class Collected:
    """What the sink saw of this run."""

    arrivals: dict[int, int] = field(default_factory=dict)  # marker sequence -> first arrival
    samples: list[tuple[int, int]] = field(default_factory=list)
    unmarked: int = 0
    spans: list[tuple[int, int, int]] = field(default_factory=list)  # (ns, spans, enriched)


async def _collect_arrivals(
    sink: grpc.aio.Channel, run: Run, base: int, settle_s: float
) -> Collected:
    """This run's arrivals at the sink; waits up to ``settle_s`` for every acknowledged
    span (held spans arrive after their hold)."""
    acked = {seq for seq, (_, _, code) in run.sent.items() if code == "OK"}
    spans_acked = len(acked) * run.spans
    got_spans = 0
    out = Collected()
    deadline = time.monotonic() + settle_s
    while True:
        got = await _drain_sink(sink)
        for seq, at in got["arrivals"]:
            if seq >> 24 == base >> 24:
                out.arrivals.setdefault(seq, at)
        out.samples.extend((s, n) for s, n in got["samples"] if s >> 24 == base >> 24)
        out.unmarked += got["unmarked"]
        out.spans.extend(map(tuple, got["spans"]))
        got_spans += sum(n for _, n, _ in got["spans"])
        done = acked <= out.arrivals.keys() and got_spans >= spans_acked
        if done or time.monotonic() > deadline:
            return out
        await asyncio.sleep(0.1)


def _figures(
    args: argparse.Namespace,
    batch: Rotation,
    run: Run,
    window: Window,
    collected: Collected,
) -> dict[str, Any]:
    arrivals, samples, unmarked = collected.arrivals, collected.samples, collected.unmarked
    ws, we = window.start_ns, window.end_ns
    seconds = (we - ws) / 1e9
    in_window = {seq: rec for seq, rec in run.sent.items() if ws <= rec[0] < we}
    codes = Counter(code for _, _, code in in_window.values())
    ok = [seq for seq, (_, _, code) in in_window.items() if code == "OK"]
    answered = sum(1 for _, t1, code in run.sent.values() if code == "OK" and ws <= t1 < we)
    # Spans counted at the sink as they arrived in the window (released holds too).
    delivered_spans = sum(n for at, n, _ in collected.spans if ws <= at < we)
    spans_seen = sum(n for _, n, _ in collected.spans)
    enriched = sum(e for _, _, e in collected.spans)
    acked_total = sum(1 for _, _, code in run.sent.values() if code == "OK")
    cpu = {
        name: readings[1] - readings[0]
        for name, readings in window.cpu.items()
        if len(readings) == 2
    }
    wall = cpu.pop("wall", seconds)
    target_cpu = cpu.get("target")
    return {
        "target": args.target,
        "mode": "open" if args.rate > 0 else "closed",
        "rate_requested": args.rate,
        "concurrency": args.concurrency,
        "spans_per_request": batch.spans,
        "request_bytes": batch.size,
        "window_s": seconds,
        "requests_sent": len(in_window),
        "status": dict(codes),
        "answered_spans_per_s": answered * batch.spans / seconds,
        "delivered_spans_per_s": delivered_spans / seconds,
        "latency_ms": summary_ms([run.sent[s][1] - run.sent[s][0] for s in ok]),
        "delivery_ms": summary_ms([arrivals[s] - run.sent[s][0] for s in ok if s in arrivals]),
        "undelivered_acknowledged": acked_total - sum(1 for s in arrivals if s in run.sent),
        "spans_acknowledged": acked_total * batch.spans,
        "spans_at_sink": spans_seen,
        "spans_lost": max(0, acked_total * batch.spans - spans_seen),
        "enriched_share": enriched / spans_seen if spans_seen else 0.0,
        "shape": args.shape,
        "sample_span_mismatches": sum(1 for _, n in samples if n != batch.spans),
        "unmarked_at_sink": unmarked,
        "late_ms": summary_ms(run.late_ns),
        "skipped": run.skipped,
        "target_cpu_s": target_cpu,
        "target_cpu_s_per_100k_spans": (
            target_cpu / delivered_spans * 100_000 if target_cpu and delivered_spans else None
        ),
        "cpu_utilisation": {name: value / wall for name, value in cpu.items()},
    }


def main() -> None:
    """Parse arguments, run, print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument("--sink", required=True, metavar="HOST:PORT")
    parser.add_argument("--spans", type=int, default=512, help="spans per request")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8, help="closed loop: calls in flight")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: spans/s (0: closed)")
    parser.add_argument("--max-in-flight", type=int, default=256, help="open loop bound")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--target-pid", type=int, default=0)
    parser.add_argument("--sink-pid", type=int, default=0)
    parser.add_argument(
        "--span-time-ns", type=int, default=0, help="start of the last span (default: now)"
    )
    parser.add_argument("--shape", choices=SHAPES, default="narrow", help="workload shape")
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds to wait for acknowledged spans"
    )
    parser.add_argument("--run-id", type=int, default=1, help="0..255, tags this run's requests")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args))), flush=True)


if __name__ == "__main__":
    main()
