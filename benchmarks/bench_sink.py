"""The benchmark's downstream: an OTLP/gRPC sink that acknowledges without decoding.

Each Export call is answered at once. The sink only looks for the load
generator's marker (``MARKER``, the first span's span id) in the request and
records when that request arrived (CLOCK_MONOTONIC, which every
process on the machine shares), so the load generator can count delivered spans
and time each request from its send to its delivery. One request in
``SAMPLE_EVERY`` is decoded to check that it still holds every span. A service
may merge several requests into one (``exporter.queue.merge_bytes``), so every
marker in the payload counts. Spans are counted in every request by
``workload.SPAN_MARK`` (once per span) and enriched ones by the ``user.email``
key the service writes, so spans that left a hold in other requests than they
came in are counted when they arrive.

A second method, ``/benchmarks.Sink/Drain``, returns what was recorded since
the previous call as JSON and forgets it.

Usage: python -m benchmarks.bench_sink [--port 0]   (prints {"grpc": "host:port"})
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from benchmarks.workload import SPAN_MARK

# The first span of every load-generator request has span id MARKER + 4-byte sequence number.
MARKER = b"\xb3\x7c\xe1\x5a"
# Protobuf tag of Span.span_id (field 2, length-delimited) and its length (8 bytes).
SPAN_ID_PREFIX = b"\x12\x08"
# The first span starts after the resource and scope: well within this many bytes.
SEARCH_BYTES = 4096
SAMPLE_EVERY = 64
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
DRAIN_METHOD = "/benchmarks.Sink/Drain"
_RESPONSE = ExportTraceServiceResponse().SerializeToString()
_NEEDLE = SPAN_ID_PREFIX + MARKER
_ENRICHED = b"\x0a\x0auser.email"  # KeyValue.key "user.email"


def find_sequences(raw: bytes) -> list[int]:
    """Every load-generator sequence number in ``raw`` (several when requests were merged)."""
    found = []
    at = raw.find(_NEEDLE)
    while at >= 0:
        start = at + len(_NEEDLE)
        found.append(int.from_bytes(raw[start : start + 4], "big"))
        at = raw.find(_NEEDLE, start)
    return found


def count_spans(raw: bytes) -> int:
    """Spans in a serialized ExportTraceServiceRequest (a full decode: used for samples)."""
    request = ExportTraceServiceRequest.FromString(raw)
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


class Recorder:
    """Arrivals since the last drain: (sequence, monotonic ns), plus totals."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[int, int]] = []
        self.spans: list[tuple[int, int, int]] = []  # (monotonic ns, spans, enriched)
        self.samples: list[tuple[int, int]] = []  # (sequence, spans) of decoded requests
        self.unmarked = 0
        self.requests = 0
        self.bytes = 0

    async def export(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """TraceService/Export: record the arrival and acknowledge."""
        now = time.monotonic_ns()
        self.requests += 1
        self.bytes += len(raw)
        sequences = find_sequences(raw)
        if not sequences:
            self.unmarked += 1
        self.arrivals.extend((seq, now) for seq in sequences)
        self.spans.append((now, raw.count(SPAN_MARK), raw.count(_ENRICHED)))
        if self.requests % SAMPLE_EVERY == 0 and sequences:
            # Spans per merged request; a loss shows as a count that does not divide.
            spans, parts = count_spans(raw), len(sequences)
            self.samples.append((sequences[0], spans // parts if spans % parts == 0 else -1))
        return _RESPONSE

    async def drain(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """Return and forget what was recorded."""
        body: dict[str, Any] = {
            "arrivals": self.arrivals,
            "spans": self.spans,
            "samples": self.samples,
            "unmarked": self.unmarked,
            "requests": self.requests,
            "bytes": self.bytes,
        }
        self.arrivals, self.samples, self.spans = [], [], []
        self.unmarked = self.requests = self.bytes = 0
        return json.dumps(body).encode()


async def serve(port: int) -> None:
    """Listen on 127.0.0.1:``port`` until cancelled; print the bound address first."""
    recorder = Recorder()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 256 << 20)])
    raw = {"request_deserializer": None, "response_serializer": None}
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE,
                {"Export": grpc.unary_unary_rpc_method_handler(recorder.export, **raw)},
            ),
            grpc.method_handlers_generic_handler(
                "benchmarks.Sink",
                {"Drain": grpc.unary_unary_rpc_method_handler(recorder.drain, **raw)},
            ),
        ]
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(json.dumps({"grpc": f"127.0.0.1:{bound}"}), flush=True)
    await server.wait_for_termination()


def main() -> None:
    """Run the sink until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
