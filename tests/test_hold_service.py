"""Holding inside the running service: deadline release and flush on shutdown."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest
from conftest import Clock, push_sessions, service_config
from correlation_kit import GW, MIKE, MS, S, attrs, event, gateway_span, request_of, who
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.app.service import Service
from processor.correlate.hold import HeldGroup
from processor.tools.sink import TraceSink

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


async def export(endpoint: str, request: ExportTraceServiceRequest) -> None:
    """One Export call."""
    async with grpc.aio.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        await call(request.SerializeToString(), timeout=10)


async def held_service(sink: TraceSink, clock: Clock) -> Service:
    """A started service that holds spans for 3 s of the injected clock."""
    svc = Service(service_config(sink.endpoint, correlation={"hold": "3s"}), clock_ns=clock)
    await svc.start()
    return svc


async def test_held_spans_are_answered_at_once_and_released_at_deadline(
    sink: TraceSink, clock: Clock
) -> None:
    """The sender gets OK while spans wait; they reach the sink once their hold ran out."""
    svc = await held_service(sink, clock)
    try:
        t0 = clock.now_ns
        svc.store.add(event(MIKE, t0 - 300 * MS))
        await export(svc.addresses.grpc, request_of(gateway_span(start=t0)))
        assert svc.correlator.held == 1 and sink.raw == []
        clock.now_ns += 3 * S
        svc.pipeline.tick()
        (span,) = await sink.wait_for_spans(1)
        assert who(span) == ("mike.chen@example.com", "session", "high")
        released = svc.metrics.registry.get_sample_value(
            "user_enricher_spans_released_total", {"reason": "deadline"}
        )
        assert released == 1
    finally:
        await svc.shutdown(grace_s=1.0)


async def test_shutdown_flushes_held_spans(sink: TraceSink, clock: Clock) -> None:
    """Spans still held at shutdown are exported before the service stops."""
    svc = await held_service(sink, clock)
    await export(svc.addresses.grpc, request_of(*(gateway_span(trace=i) for i in range(5))))
    assert svc.correlator.held == 5
    await svc.shutdown(grace_s=1.0)
    assert len(sink.spans()) == 5


async def test_pushed_event_attributes_held_span_at_deadline(sink: TraceSink, clock: Clock) -> None:
    """An event pushed through the session API after the span attributes it at the deadline."""
    svc = await held_service(sink, clock)
    try:
        t0 = clock.now_ns
        await export(svc.addresses.grpc, request_of(gateway_span(start=t0)))
        assert svc.correlator.held == 1
        await push_sessions(
            svc,
            {
                "kind": "request",
                "source_ip": GW,
                "user": {"id": MIKE.id, "email": MIKE.email},
                "start": _rfc3339(t0 - 200 * MS),
                "model": "gpt-4o",
            },
        )
        assert svc.correlator.held == 1  # not released early: other events may follow
        clock.now_ns += 3 * S
        svc.pipeline.tick()
        (span,) = await sink.wait_for_spans(1)
        assert who(span)[0] == "mike.chen@example.com"
        assert attrs(span)["src.addr"].startswith(GW)
    finally:
        await svc.shutdown(grace_s=1.0)


def _rfc3339(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


async def test_request_failing_as_a_whole_is_forwarded_as_received(
    sink: TraceSink, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail open: the request goes on unenriched, spans forced out meanwhile go too, once."""
    from processor.correlate import correlator as module

    svc = Service(
        service_config(sink.endpoint, correlation={"hold": "3s", "max_held_spans": 1}),
        clock_ns=clock,
    )
    await svc.start()
    try:
        await export(svc.addresses.grpc, request_of(gateway_span(trace=1)))

        original = module.Correlator.hold_group

        def boom(self: module.Correlator, held: HeldGroup, out: module.Outcome) -> None:
            original(self, held, out)  # holds the span, forcing trace 1 out
            raise RuntimeError("injected")

        monkeypatch.setattr(module.Correlator, "hold_group", boom)
        await export(svc.addresses.grpc, request_of(gateway_span(trace=2)))
        spans = await sink.wait_for_spans(2)
    finally:
        await svc.shutdown(grace_s=1.0)
    assert sorted(s.trace_id[-1] for s in sink.spans()) == [1, 2]
    assert len(spans) == 2
    failures = svc.metrics.registry.get_sample_value("user_enricher_enrich_failures_total")
    assert failures == 1
