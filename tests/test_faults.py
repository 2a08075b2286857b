"""Fault tests on real sockets: a downstream that is down, restarts, refuses, or is slow.

Each reports sent / acknowledged / delivered / lost counts in its assertion message.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from conftest import Clock, free_port, service_config, wait_until
from fault_kit import Ledger, span_numbers
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from processor.app.service import Service
from processor.tools.sink import TraceSink


def figures(sent: int, ledger: Ledger, sink: TraceSink) -> str:
    """The accounting line every fault test prints on failure."""
    delivered = set(span_numbers(sink.span_ids()))
    lost = set(ledger.acked) - delivered
    return (
        f"sent={sent} acknowledged={len(ledger.acked)} delivered={len(delivered)} "
        f"duplicates={len(sink.span_ids()) - len(delivered)} lost={len(lost)}"
    )


def metric(svc: Service, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the service's registry (0 when absent)."""
    return svc.metrics.registry.get_sample_value(f"user_enricher_{name}", labels or {}) or 0.0


async def test_downstream_down_at_start_then_up(clock: Clock) -> None:
    """With Jaeger's stand-in down at start, every acknowledged span arrives exactly once."""
    port = free_port()
    svc = Service(service_config(f"127.0.0.1:{port}"), clock_ns=clock)
    await svc.start()
    sink = TraceSink()
    ledger = Ledger()
    try:
        async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
            for i in range(20):
                assert await ledger.send(channel, i * 50, 50) == grpc.StatusCode.OK
        await wait_until(lambda: metric(svc, "export_retries_total", {"code": "UNAVAILABLE"}) >= 3)
        await sink.start(port)
        await wait_until(lambda: len(sink.span_ids()) >= 1000)
    finally:
        await svc.shutdown(grace_s=1.0)
        await sink.stop()
    print(f"downstream down at start: {figures(1000, ledger, sink)}")
    assert sorted(span_numbers(sink.span_ids())) == list(range(1000)), figures(1000, ledger, sink)


async def test_downstream_restarted_under_load(clock: Clock) -> None:
    """A downstream restarted mid-stream loses nothing the service acknowledged."""
    port = free_port()
    sink = TraceSink()
    await sink.start(port)
    svc = Service(service_config(sink.endpoint), clock_ns=clock)
    await svc.start()
    ledger = Ledger()
    try:
        async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
            for i in range(40):
                if i == 15:
                    await sink.stop(grace_s=0)
                if i == 25:
                    await sink.start(port)
                await ledger.send(channel, i * 25, 25)
        await wait_until(lambda: set(ledger.acked) <= set(span_numbers(sink.span_ids())))
    finally:
        await svc.shutdown(grace_s=1.0)
        await sink.stop()
    print(f"downstream restarted: {figures(1000, ledger, sink)}")
    assert len(ledger.acked) == 1000, figures(1000, ledger, sink)
    assert set(span_numbers(sink.span_ids())) == set(range(1000)), figures(1000, ledger, sink)


async def test_permanent_refusal_is_dropped_counted_logged_not_retried(clock: Clock) -> None:
    """A downstream answering INVALID_ARGUMENT costs one attempt per batch, loudly."""
    sink = TraceSink(failures=[grpc.StatusCode.INVALID_ARGUMENT] * 3)
    await sink.start()
    svc = Service(service_config(sink.endpoint), clock_ns=clock)
    await svc.start()
    ledger = Ledger()
    try:
        with capture_logs() as logs:
            async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
                for i in range(3):
                    await ledger.send(channel, i * 10, 10)
            await wait_until(
                lambda: metric(svc, "spans_dropped_total", {"code": "INVALID_ARGUMENT"}) >= 30
            )
    finally:
        await svc.shutdown(grace_s=1.0)
        await sink.stop()
    dropped = metric(svc, "spans_dropped_total", {"code": "INVALID_ARGUMENT"})
    print(
        f"permanent refusal: sent=30 acknowledged=30 dropped={dropped:g} attempts={sink.attempts}"
    )
    assert sink.attempts == 3  # no retry storm
    assert metric(svc, "export_retries_total", {"code": "INVALID_ARGUMENT"}) == 0
    logged = [e for e in logs if e["event"] == "export_dropped"]
    assert [e["spans"] for e in logged] == [10, 10, 10]
    assert all(e["log_level"] == "error" for e in logged)


def sdk_export(endpoint: str, batches: int) -> list[SpanExportResult]:
    """The real OTel SDK exporter sends ``batches`` exports of 10 spans (blocking)."""
    provider = TracerProvider(resource=Resource.create({"service.name": "agentgateway"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("agentgateway")
    for i in range(batches * 10):
        tracer.start_span("POST /*", attributes={"src.addr": "172.18.0.5:1", "n": i}).end()
    spans = memory.get_finished_spans()
    exporter = OTLPSpanExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=30)
    results = [exporter.export(spans[i : i + 10]) for i in range(0, len(spans), 10)]
    exporter.shutdown()
    return results


async def test_queue_full_backpressure_then_everything_delivered(clock: Clock) -> None:
    """A full queue answers RESOURCE_EXHAUSTED with RetryInfo; the SDK retries and delivers all."""
    sink = TraceSink()
    sink.gate = asyncio.Event()  # the downstream hangs until the gate opens
    await sink.start()
    config = service_config(sink.endpoint, queue={"size": 2, "consumers": 1})
    svc = Service(config, clock_ns=clock)
    await svc.start()
    try:
        sending = asyncio.create_task(asyncio.to_thread(sdk_export, svc.addresses.grpc, 5))
        await wait_until(
            lambda: metric(svc, "requests_received_total", {"outcome": "backpressure"}) >= 1
        )
        sink.gate.set()
        results = await sending
        await wait_until(lambda: len(sink.span_ids()) >= 50)
    finally:
        await svc.shutdown(grace_s=1.0)
        await sink.stop()
    backpressured = metric(svc, "requests_received_total", {"outcome": "backpressure"})
    print(f"queue full: sent=50 delivered={len(sink.span_ids())} refusals={backpressured:g}")
    assert results == [SpanExportResult.SUCCESS] * 5
    assert len(sink.span_ids()) == 50


async def test_bad_ok_answer_does_not_stop_exporting(clock: Clock) -> None:
    """An OK answer whose body does not parse still counts as delivered; export goes on."""
    from processor.export.queue import Batch, ExportQueue

    class Garbled:
        """A sender whose first send raises something it should not."""

        def __init__(self) -> None:
            self.calls = 0

        async def send(self, payload: bytes) -> None:
            self.calls += 1
            if self.calls == 1:
                raise AttributeError("'NoneType' object has no attribute 'partial_success'")

    delivered: list[Batch] = []
    dropped: list[Batch] = []
    queue = ExportQueue(
        Garbled(),
        size=10,
        max_bytes=1 << 20,
        consumers=1,
        on_delivered=delivered.append,
        on_dropped=lambda b, _: dropped.append(b),
    )
    queue.start()
    queue.put(Batch(b"a", 1))
    queue.put(Batch(b"b", 1))
    left = await queue.drain(5)
    assert (
        left == [] and [b.data for b in dropped] == [b"a"] and [b.data for b in delivered] == [b"b"]
    )


async def test_full_spool_means_backpressure_not_loss(clock: Clock, tmp_path: Path) -> None:
    """With the spool at its byte bound, senders are refused until Jaeger takes the backlog."""
    sink = TraceSink()
    sink.gate = asyncio.Event()  # the downstream hangs, so nothing leaves the spool
    await sink.start()
    queue = {"directory": str(tmp_path / "spool"), "max_spool_bytes": "1MiB"}
    svc = Service(service_config(sink.endpoint, queue=queue), clock_ns=clock)
    await svc.start()
    ledger = Ledger()
    try:
        async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
            n = 0
            while await ledger.send(channel, n * 500, 500) == grpc.StatusCode.OK:
                n += 1
                assert n < 100, "the spool bound was never reached"
            assert ledger.refused == {"RESOURCE_EXHAUSTED": 500}
            sink.gate.set()
            await wait_until(lambda: set(ledger.acked) <= set(span_numbers(sink.span_ids())))
            assert await ledger.send(channel, n * 500, 500) == grpc.StatusCode.OK
    finally:
        await svc.shutdown(grace_s=1.0)
        await sink.stop()
    print(f"spool full: {figures(len(ledger.acked), ledger, sink)}")


async def test_merged_send_failing_retryably_is_delivered_once(clock: Clock) -> None:
    """Ten batches wait while the downstream hangs, then go out merged into a failure.

    The downstream answers UNAVAILABLE twice (the batch in flight, then the merged
    request of the others): every batch is requeued and delivered, none twice.
    """
    sink = TraceSink(failures=[grpc.StatusCode.UNAVAILABLE] * 2)
    sink.gate = asyncio.Event()
    await sink.start()
    # One consumer: the batches behind the one in flight wait together and merge.
    svc = Service(service_config(sink.endpoint, queue={"consumers": 1}), clock_ns=clock)
    await svc.start()
    ledger = Ledger()
    try:
        async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
            for i in range(10):
                await ledger.send(channel, i * 20, 20)
        sink.gate.set()
        await wait_until(lambda: set(ledger.acked) <= set(span_numbers(sink.span_ids())))
    finally:
        await svc.shutdown(grace_s=1.0)
        await sink.stop()
    print(f"merged send failed retryably: {figures(200, ledger, sink)}")
    assert sink.attempts >= 3 and len(sink.requests) < 10, (sink.attempts, len(sink.requests))
    assert sorted(span_numbers(sink.span_ids())) == list(range(200)), figures(200, ledger, sink)
