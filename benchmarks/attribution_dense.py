"""Dense attribution cases: many people active at once behind one Open WebUI address.

The sparse day (``benchmarks.attribution``) has about 0.04 calls/s on the address;
a team in a busy hour sends several. Here N users call concurrently for ten
minutes at a steady total rate; each call's identity event precedes its gateway
span by a lag drawn from one source's real range:

- ``request`` hook of the filter: 5-80 ms (measured on Open WebUI 0.12.4: 5-9 ms);
- ``inlet`` / webhooks: 0.5-3 s.

70% of events name the model. Every span is scored, and so is the *timing
bound*: the share of spans whose true event is the only event within the
source's real lag range before the span, i.e. what any matcher that uses only
time (and knows the range exactly) could attribute. Recall / bound says how
close the service comes to it with its default configuration.

Usage: python -m benchmarks.attribution_dense [--seed N] [--minutes M] [--config FILE]
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from benchmarks.attribution import (
    DAY_START,
    GATEWAY_SPAN_NAME,
    MODELS,
    MS,
    OPENWEBUI,
    Arrival,
    Score,
    _config,
    _kv,
    _pct,
    replay,
)
from processor.app.config import Config
from processor.model import Session, SessionKind, User

S = 1000 * MS
# (users on the address, total calls per second)
CASES = ((5, 0.35), (20, 1.5), (100, 4.0), (100, 5.0))
LAGS = {"request 5-80ms": (5 * MS, 80 * MS), "inlet 0.5-3s": (500 * MS, 3000 * MS)}
PRECISION_FLOOR = 0.999
RECALL_SHARE_OF_BOUND = 0.9


@dataclass(frozen=True, slots=True)
class DenseCall:
    """One call: who, when its event was sent, when its gateway span started."""

    trace_id: bytes
    user: User
    event_ns: int
    start_ns: int
    model: str
    model_known: bool


def simulate(
    users: int, rate: float, lag: tuple[int, int], minutes: float, seed: int
) -> list[DenseCall]:
    """Poisson calls at ``rate``/s shared by ``users`` people, each with a favourite model."""
    rng = random.Random(seed)
    people = [User(id=f"u{i}", email=f"user{i}@example.com") for i in range(users)]
    favourite = {p.id: rng.choice(MODELS) for p in people}
    calls: list[DenseCall] = []
    t = DAY_START
    end = DAY_START + int(minutes * 60 * S)
    while True:
        t += int(rng.expovariate(rate) * S)
        if t >= end:
            return calls
        person = rng.choice(people)
        model = favourite[person.id] if rng.random() < 0.8 else rng.choice(MODELS)
        start = t + rng.randint(*lag)
        calls.append(DenseCall(rng.randbytes(16), person, t, start, model, rng.random() < 0.7))


def timing_bound(calls: list[DenseCall], lag: tuple[int, int]) -> float:
    """Share of calls whose true event is alone in [start - max lag, start - min lag]."""
    events = sorted(c.event_ns for c in calls)
    alone = 0
    for call in calls:
        lo = bisect_left(events, call.start_ns - lag[1])
        hi = bisect_right(events, call.start_ns - lag[0])
        alone += hi - lo == 1
    return alone / len(calls) if calls else 0.0


def arrivals(calls: list[DenseCall], rng: random.Random, kind: SessionKind) -> Iterator[Arrival]:
    """Events (1-30 ms after they are sent) and spans (exported 0.05-5 s after they end)."""
    heap: list[Arrival] = []
    for seq, call in enumerate(calls):
        model = call.model if call.model_known else ""
        session = Session(
            OPENWEBUI, call.user, call.event_ns, call.event_ns, model=model, kind=kind
        )
        arrive = call.event_ns + rng.randint(1 * MS, 30 * MS)
        heapq.heappush(heap, Arrival(arrive, 2 * seq, "event", session=session))
        end = call.start_ns + rng.randint(1 * S, 20 * S)
        exported = end + rng.randint(50 * MS, 5 * S)
        heapq.heappush(heap, Arrival(exported, 2 * seq + 1, "spans", spans=[_span(call, end)]))
    while heap:
        yield heapq.heappop(heap)


def _span(call: DenseCall, end_ns: int) -> Span:
    span = Span(
        trace_id=call.trace_id,
        span_id=call.trace_id[:8],
        name=GATEWAY_SPAN_NAME,
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=call.start_ns,
        end_time_unix_nano=end_ns,
    )
    port = 30000 + int.from_bytes(call.trace_id[:2]) % 30000
    span.attributes.extend(
        [_kv("src.addr", f"{OPENWEBUI}:{port}"), _kv("gen_ai.request.model", call.model)]
    )
    return span


def run(calls: list[DenseCall], config: Config, seed: int, kind: SessionKind) -> Score:
    """Replay the calls through a fresh correlator built from ``config``; score every span."""
    truth = {c.trace_id: c.user for c in calls}
    return replay(arrivals(calls, random.Random(seed), kind), config, truth)


def main() -> int:
    """Every case and lag range: precision, recall, the timing bound and recall / bound."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--config", help="service config whose correlation settings to use")
    args = parser.parse_args()
    config = _config(args.config)
    header = f"{'users':>5} {'calls/s':>7} {'lag':>15} {'spans':>6} {'precision':>9} "
    header += f"{'recall':>7} {'bound':>6} {'recall/bound':>12}"
    print(header)
    print("-" * len(header))
    failures: list[str] = []
    started = time.perf_counter()
    for users, rate in CASES:
        for name, lag in LAGS.items():
            calls = simulate(users, rate, lag, args.minutes, args.seed * 1000 + users)
            # The request hook reports each call; inlet and webhooks each message.
            kind: SessionKind = "call" if name.startswith("request") else "request"
            score = run(calls, config, args.seed, kind)
            bound = timing_bound(calls, lag)
            recall = score.attributed / score.spans if score.spans else 0.0
            precision = score.precision()
            share = recall / bound if bound else None
            print(
                f"{users:>5} {rate:>7} {name:>15} {score.spans:>6} {_pct(precision):>9} "
                f"{_pct(recall):>7} {_pct(bound):>6} {_pct(share):>12}"
            )
            print(f"  ... {time.perf_counter() - started:.1f}s", file=sys.stderr)
            if precision is not None and precision < PRECISION_FLOOR:
                failures.append(f"{users} users, {name}: precision {_pct(precision)}")
            hook = name.startswith("request")
            if hook and share is not None and share < RECALL_SHARE_OF_BOUND:
                failures.append(f"{users} users, {name}: recall/bound {_pct(share)}")
    print()
    for failure in failures:
        print(f"TARGET MISSED: {failure}")
    if not failures:
        print("All targets met: precision >= 99.9%, recall >= 0.9 x bound for the request hook.")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
