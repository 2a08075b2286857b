"""The span path's floor: what the C calls every request needs cost per span, against
the decode + re-encode of a pass-through, in process.

Whatever the Python around them does, the column path makes these calls for each
request: the strict door's full decode (the pass-through makes it too), the
structure view, the span-id check, the column read, and the splice of the encoded
attribution into the spans. This prints the cost of each per span on the diverse
shape (every span its own ``ip:port`` and user), then the service's whole enrich
step built from the default config with hold 0, and what is left for Python.

With ``--proxy-spans-per-s`` (the decode + re-encode proxy's delivered rate from
``benchmarks.shapes``, same machine), it also prints the share of that rate the
service could reach if its Python per-span work were nothing: the proxy's
end-to-end cost per span, less its decode and re-encode, is what gRPC and
asyncio cost per span; the service pays that plus the floor.

Usage: python -m benchmarks.floor [--seconds 2] [--proxy-spans-per-s N]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from itertools import count
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.enrich import BATCH, best_rate, diverse_store
from benchmarks.workload import diverse_batch
from processor.app.build import build_correlator
from processor.app.config import parse_config
from processor.app.tuning import tune_malloc
from processor.correlate.identity import AttributionEncoder
from processor.identity.sessions.traces import TraceIdentities
from processor.model import Attribution, User
from processor.wire.columns import ColumnReader, flat_columns
from processor.wire.received import Received
from processor.wire.splice import splice
from processor.wire.strict import check_ids, check_request
from processor.wire.views import RequestView, SpanIds

PARTS = 4


def per_span_us(step: Callable[[int], object], seconds: float) -> float:
    """Best µs per span of ``step(i)`` (one batch per call, ``i`` counting calls), timed
    as :func:`benchmarks.enrich.best_rate` times a step."""
    calls = count()
    return 1e6 / best_rate(lambda: step(next(calls)), seconds)


def main() -> None:
    """Print the floor and, given the proxy's end-to-end rate, the ceiling it implies."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure")
    parser.add_argument(
        "--proxy-spans-per-s",
        type=float,
        default=0.0,
        metavar="N",
        help="the decode + re-encode proxy's delivered spans/s on the diverse shape",
    )
    args = parser.parse_args()
    print(f"malloc tuning: {'on' if tune_malloc() else 'off'}")
    raws = [diverse_batch(BATCH, part=p) for p in range(PARTS)]
    received = [Received.parse(raw) for raw in raws]
    spans = [r.span_bytes() for r in received]
    config = parse_config(
        {
            "exporter": {"endpoint": "127.0.0.1:4317"},
            "api": {"enabled": False},
            "correlation": {"hold": 0},
        },
        base_dir=Path.cwd(),
        env={},
    )
    traces = TraceIdentities(int(config.correlation.trace_ttl * 1e9), config.correlation.max_traces)
    correlator = build_correlator(config, diverse_store(), traces)
    reader: ColumnReader = correlator.column_reader
    encoder = AttributionEncoder()
    extras = [
        encoder.encoded(Attribution(User(id=f"d{i}", email=f"d{i}@example.com"), "session", "high"))
        for i in range(BATCH)
    ]

    def enrich(i: int) -> object:
        one = Received.parse(raws[i % PARTS])
        correlator.admit(one)
        return correlator.receive(one, 0).current

    _check_enriched(enrich(0))

    def view(i: int) -> object:
        raw = raws[i % PARTS]
        return Received(raw, RequestView.FromString(raw)).span_bytes()

    def columns_parse(i: int) -> object:
        flat = flat_columns(spans[i % PARTS])
        return flat.attributes.SerializeToString()  # the keys, for the layouts

    def columns_read(i: int) -> object:
        return reader.read(spans[i % PARTS])

    floor_steps: list[tuple[str, Callable[[int], object]]] = [
        ("strict door: full decode", lambda i: check_request(raws[i % PARTS])),
        ("structure view and span bytes", view),
        ("span ids: parse", lambda i: SpanIds.FromString(b"".join(spans[i % PARTS]))),
        ("columns: parse, keys re-encoded", columns_parse),
        ("splice of the attribution", lambda i: splice(received[i % PARTS], extras)),
    ]
    built_steps: list[tuple[str, Callable[[int], object]]] = [
        ("span-id check, as built", lambda i: check_ids(spans[i % PARTS])),
        (
            f"column read, as built ({len(reader.wanted)} keys)",
            lambda i: reader.read(spans[i % PARTS]),
        ),
        ("enrich step (defaults, hold 0)", enrich),
    ]
    proxy = per_span_us(
        lambda i: ExportTraceServiceRequest.FromString(raws[i % PARTS]).SerializeToString(),
        args.seconds,
    )
    print(f"diverse shape, {PARTS} batches of {BATCH} spans in turn; µs per span, best round")
    print(f"{'step':<52} {'µs/span':>8}")
    print(f"{'pass-through: decode + re-encode':<52} {proxy:>8.3f}")
    floor = 0.0
    for label, step in floor_steps:
        cost = per_span_us(step, args.seconds)
        floor += cost
        print(f"{'  service: ' + label:<52} {cost:>8.3f}")
    print(f"{'service floor: the C calls above':<52} {floor:>8.3f}")
    built = {label: per_span_us(step, args.seconds) for label, step in built_steps}
    for label, cost in built.items():
        print(f"{'service: ' + label:<52} {cost:>8.3f}")
    whole = built["enrich step (defaults, hold 0)"]
    print(f"{'  of which Python, beyond the floor':<52} {whole - floor:>8.3f}")
    if args.proxy_spans_per_s > 0:
        end_to_end = 1e6 / args.proxy_spans_per_s
        transport = end_to_end - proxy
        print(
            f"proxy end to end {end_to_end:.3f} µs/span: gRPC and asyncio {transport:.3f} µs/span"
        )
        for label, cost in (("floor only", floor), ("enrich step", whole)):
            ceiling = end_to_end / (transport + cost)
            print(f"ceiling with the {label}: {ceiling:.2f} x the proxy")


def _check_enriched(payload: object) -> None:
    """Stop unless every span of the enrich step's output names its user: a path
    that skipped the work would time as fast."""
    data = getattr(payload, "data", None)
    if not isinstance(data, bytes):
        raise SystemExit(f"enrich step forwarded nothing: {payload!r}")
    request = ExportTraceServiceRequest.FromString(data)
    named = sum(
        any(kv.key == "user.email" for kv in span.attributes)
        for rs in request.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    )
    if named != BATCH:
        raise SystemExit(f"enrich step named {named} of {BATCH} spans' users")


if __name__ == "__main__":
    main()
