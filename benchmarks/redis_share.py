"""What sharing sessions through Redis costs: propagation delay vs a per-request round trip.

Starts a redis-server on 127.0.0.1, two RedisShare replicas, pushes request events
on one and times their arrival on the other; then times the round trip that a
design looking sessions up in Redis for every request would pay instead.

Usage: python -m benchmarks.redis_share [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from redis import asyncio as aioredis

from processor.identity.sessions.shared import RedisShare
from processor.model import Session, User


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _share(url: str, on_session: object) -> RedisShare:
    return RedisShare(
        aioredis.Redis.from_url(url),
        prefix="bench:",
        clock_ns=time.time_ns,
        grace_ns=60 * 10**9,
        trace_ttl_ns=60 * 10**9,
        on_session=on_session,  # type: ignore[arg-type]
        on_close=lambda *_: None,
        on_trace=lambda *_: None,
    )


async def _run(url: str, events: int, spacing_s: float) -> None:
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    def seen(session: Session) -> None:
        arrived[session.user.id] = time.perf_counter()
        if len(arrived) == events:
            done.set()

    a, b = _share(url, lambda s: None), _share(url, seen)
    a.start()
    b.start()
    while not (a.connected and b.connected):  # noqa: ASYNC110 - a flag, no event
        await asyncio.sleep(0.01)
    sent: dict[str, float] = {}
    now = time.time_ns()
    for i in range(events):
        user = User(id=f"u{i}")
        sent[user.id] = time.perf_counter()
        a.session(Session("172.18.0.5", user, now, now, kind="request"))
        if spacing_s:
            await asyncio.sleep(spacing_s)  # events arriving one by one
        elif i % 50 == 0:
            await asyncio.sleep(0)  # a burst: let the writer run now and then
    await asyncio.wait_for(done.wait(), 60)
    delays = sorted((arrived[k] - sent[k]) * 1000 for k in sent)
    client = aioredis.Redis.from_url(url)
    rtts = []
    for _ in range(2000):
        t = time.perf_counter()
        await client.mget(["bench:x", "bench:y"])
        rtts.append((time.perf_counter() - t) * 1e6)
    await client.aclose()
    await a.shutdown()
    await b.shutdown()
    rtts.sort()
    mode = f"one every {spacing_s * 1000:g} ms" if spacing_s else "in one burst"
    print(
        f"pub/sub propagation, {events} events {mode}: p50 {statistics.median(delays):.2f} ms, "
        f"p99 {delays[int(len(delays) * 0.99)]:.2f} ms, max {delays[-1]:.2f} ms"
    )
    print(
        f"one MGET round trip (what a per-request lookup would add): p50 "
        f"{statistics.median(rtts):.0f} us, p99 {rtts[int(len(rtts) * 0.99)]:.0f} us"
    )


def main() -> int:
    """Run the measurement against a private redis-server."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--spacing-ms", type=float, default=0.0, help="0: one burst")
    args = parser.parse_args()
    server = shutil.which("redis-server")
    if server is None:
        print("redis-server is not installed")
        return 1
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--save", "", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)  # a benchmark, not a test: a fixed start-up wait is fine here
            url = f"redis://127.0.0.1:{port}/0"
            asyncio.run(_run(url, args.events, args.spacing_ms / 1000))
        finally:
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
