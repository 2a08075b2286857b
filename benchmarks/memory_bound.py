"""Peak memory under many senders of large requests while the downstream hangs (not a test).

Starts ``user-enricher serve`` as a child process in front of a sink that answers
nothing, has N concurrent gRPC senders push near-limit Export requests for a while
(refused ones retry after the RetryInfo delay), samples the child's RSS, then lets
the downstream go and samples again once the queue has drained. Prints the peak RSS
against what the configured bounds add up to (docs/faults.md, "Memory"; exits 1
when it is above):

    baseline + 2 x queue.max_bytes + 3 x receiver.max_inflight_bytes
             + 2 x min(senders, connections.grpc_max_concurrent_rpcs) x request size

(a queued request takes about twice its bytes; gRPC holds each call's message
twice, in its core and as Python bytes, before the handler can refuse it).

Usage: python -m benchmarks.memory_bound [--senders 64] [--seconds 20] [--request-mb 3.9]
                                         [--queue-mb 64] [--inflight-mb 16]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.harness import memory
from benchmarks.serve_child import serve_child
from processor.tools.sink import TraceSink

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MB = 1_000_000
MiB = 1 << 20
GRPC_MAX_CONCURRENT_RPCS = 256  # connections.grpc_max_concurrent_rpcs, default


def request_of(size: int, seed: int) -> bytes:
    """An AgentGateway-shaped Export request of about ``size`` bytes."""
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    n = 0
    while request.ByteSize() < size:
        for _ in range(500):
            span = spans.add(
                trace_id=(seed * 10**7 + n).to_bytes(16, "big"),
                span_id=n.to_bytes(8, "big") or b"\x01" * 8,
            )
            span.name = "POST /*"
            span.start_time_unix_nano = 1_795_000_000_000_000_000 + n
            span.attributes.add(
                key="src.addr"
            ).value.string_value = f"172.18.0.5:{30000 + n % 30000}"
            span.attributes.add(key="gen_ai.request.model").value.string_value = "gpt-4o"
            n += 1
    return request.SerializeToString()


async def main() -> int:
    """Run the load and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--request-mb", type=float, default=3.9)
    parser.add_argument("--queue-mb", type=int, default=64)
    parser.add_argument("--inflight-mb", type=int, default=16)
    args = parser.parse_args()
    gate = asyncio.Event()
    sink = TraceSink()
    sink.gate = gate
    await sink.start()
    config = {
        "receiver": {
            "grpc_endpoint": "127.0.0.1:0",
            "http_endpoint": "",
            "max_inflight_bytes": f"{args.inflight_mb}MiB",
        },
        "exporter": {
            "endpoint": sink.endpoint,
            "insecure": True,
            "queue": {"max_bytes": f"{args.queue_mb}MiB", "retry_after": "100ms"},
        },
        "api": {"enabled": False},
        "correlation": {"hold": 0},
    }
    try:
        async with serve_child(config) as (proc, started):
            return await _measure(proc.pid, started["grpc"], sink, gate, args)
    finally:
        gate.set()
        await sink.stop()


async def _measure(
    pid: int, address: str, sink: TraceSink, gate: asyncio.Event, args: argparse.Namespace
) -> int:
    baseline = memory(pid).rss_mb * MiB
    payloads = [request_of(int(args.request_mb * MB), s) for s in range(args.senders)]
    stop = time.monotonic() + args.seconds
    counts = {"ok": 0, "refused": 0}

    async def sender(payload: bytes) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(EXPORT)
            while time.monotonic() < stop:
                try:
                    await call(payload, timeout=30)
                    counts["ok"] += 1
                except grpc.aio.AioRpcError:
                    counts["refused"] += 1
                    await asyncio.sleep(0.1)  # the RetryInfo delay

    tasks = [asyncio.create_task(sender(p)) for p in payloads]
    print(
        f"{args.senders} senders of {args.request_mb} MB, downstream hung, {args.seconds:g} s ..."
    )
    await asyncio.gather(*tasks)
    loaded = memory(pid)
    peak = loaded.peak_mb * MiB  # VmHWM: the kernel's own high-water mark
    gate.set()
    per_request = len(
        ExportTraceServiceRequest.FromString(payloads[0]).resource_spans[0].scope_spans[0].spans
    )
    await sink.wait_for_spans(per_request * counts["ok"], timeout_s=300)
    await asyncio.sleep(2.0)  # let the allocator hand memory back
    after = memory(pid).rss_mb * MiB
    calls = min(args.senders, GRPC_MAX_CONCURRENT_RPCS) * int(args.request_mb * MB)
    bound = baseline + 2 * args.queue_mb * MiB + 3 * args.inflight_mb * MiB + 2 * calls
    print(f"accepted {counts['ok']}, refused {counts['refused']} (RESOURCE_EXHAUSTED)")
    print(
        f"RSS baseline {baseline / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB, "
        f"at the end of the load {loaded.rss_mb:.0f} MiB, drained and idle {after / MiB:.0f} MiB"
    )
    print(
        f"configured bounds (baseline + 2 x queue + 3 x in-flight + 2 x calls in flight) "
        f"{bound / MiB:.0f} MiB: "
        f"{'within' if peak <= bound else 'EXCEEDED'}"
    )
    return 0 if peak <= bound else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
