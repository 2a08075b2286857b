"""A well-behaved sender's latency while hostile senders post gzip bombs (not a test).

Starts ``user-enricher serve`` as a child process, then measures one well-behaved
OTLP/HTTP sender (small gateway batches, one at a time) twice: alone, and while
hostile senders keep posting bodies of 200,000 empty gzip members (4 MB, once 30 s
of a core each) and single members that inflate past the message limit. Prints
the well-behaved sender's p50 / p99 / max latency in both phases, and how the
hostile bodies were answered.

Usage: python -m benchmarks.hostile_latency [--seconds 10] [--hostile 4] [--only 0|1]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import time
from collections import Counter

import aiohttp

from benchmarks.serve_child import serve_child
from benchmarks.workload import gateway_batch
from processor.tools.sink import TraceSink

PROTOBUF = {"Content-Type": "application/x-protobuf"}
BOMB = {**PROTOBUF, "Content-Encoding": "gzip"}


async def main() -> int:
    """Run both phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hostile", type=int, default=4)
    parser.add_argument(
        "--only", type=int, choices=(0, 1), help="one kind of bomb: 0 members, 1 size"
    )
    args = parser.parse_args()
    sink = TraceSink()
    await sink.start()
    config = {
        "receiver": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"},
        "exporter": {"endpoint": sink.endpoint, "insecure": True},
        "api": {"enabled": False},
        "correlation": {"hold": 0},
    }
    try:
        async with serve_child(config) as (_, started):
            return await _phases(f"http://{started['otlp_http']}/v1/traces", args)
    finally:
        await sink.stop()


async def _phases(url: str, args: argparse.Namespace) -> int:
    batch = gateway_batch(64)
    bombs = [gzip.compress(b"") * 200_000, gzip.compress(b"\0" * (80 << 20), compresslevel=9)]
    if args.only is not None:
        bombs = [bombs[args.only]]
    answers: Counter[str] = Counter()
    async with aiohttp.ClientSession() as client:
        alone = await _well_behaved(client, url, batch, args.seconds)
        stop = time.monotonic() + args.seconds

        async def hostile(n: int) -> None:
            body = bombs[n % len(bombs)]
            while time.monotonic() < stop:
                started = time.monotonic()
                async with client.post(url, data=body, headers=BOMB) as reply:
                    await reply.read()
                    answers[f"{reply.status} in {_bucket(time.monotonic() - started)}"] += 1

        tasks = [asyncio.create_task(hostile(n)) for n in range(args.hostile)]
        attacked = await _well_behaved(client, url, batch, args.seconds)
        await asyncio.gather(*tasks)
    print(f"well-behaved sender, 64-span batches, {args.seconds:g} s per phase")
    for name, times in (("alone", alone), (f"{args.hostile} hostile senders", attacked)):
        q = statistics.quantiles(times, n=100)
        print(
            f"  {name:>20}: {len(times):>5} requests, p50 {q[49] * 1e3:6.1f} ms, "
            f"p99 {q[98] * 1e3:6.1f} ms, max {max(times) * 1e3:6.1f} ms"
        )
    print("hostile bodies (200,000 empty gzip members; one member inflating to 80 MiB):")
    for answer, count in sorted(answers.items()):
        print(f"  HTTP {answer}: {count}")
    return 0


async def _well_behaved(
    client: aiohttp.ClientSession, url: str, batch: bytes, seconds: float
) -> list[float]:
    """Latency of each of a sender's requests, one after the other, for ``seconds``."""
    times: list[float] = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        started = time.monotonic()
        async with client.post(url, data=batch, headers=PROTOBUF) as reply:
            await reply.read()
            assert reply.status == 200, reply.status
        times.append(time.monotonic() - started)
    return times


def _bucket(seconds: float) -> str:
    for limit in (0.01, 0.1, 1.0):
        if seconds < limit:
            return f"< {limit * 1e3:g} ms"
    return ">= 1 s"


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
