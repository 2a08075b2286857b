"""The export queue merges batches that wait together into one request, safely."""

from __future__ import annotations

import asyncio

from correlation_kit import gateway_span, request_of
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.errors import DownstreamError
from processor.export.queue import Batch, ExportQueue


class Scripted:
    """Records each payload; the first send waits for ``gate``; refuses payloads
    holding ``poison`` for good, or once with a retryable error when ``flaky``. With
    ``second``, the second send raises that instead (or hangs, for ``"hang"``)."""

    def __init__(self, poison: bytes = b"", flaky: bool = False, second: str = "") -> None:
        self.payloads: list[bytes] = []
        self.gate = asyncio.Event()
        self.started = asyncio.Event()  # the first send is under way
        self.second_started = asyncio.Event()
        self.poison = poison
        self.flaky = flaky
        self.second = second

    async def send(self, payload: bytes) -> None:
        self.payloads.append(payload)
        await asyncio.sleep(0)  # a real send yields to the event loop (not a timing wait)
        if len(self.payloads) == 1:
            self.started.set()
            await self.gate.wait()
        if self.second and len(self.payloads) == 2:
            self.second_started.set()
            if self.second == "hang":
                await asyncio.Event().wait()  # until cancelled
            raise AttributeError("a bug in the sender")
        if self.poison and self.poison in payload:
            raise DownstreamError("refused", code="INVALID_ARGUMENT", retryable=False)
        if self.flaky and len(self.payloads) == 2:
            raise DownstreamError("busy", code="UNAVAILABLE", retryable=True)


def _batch(trace: int) -> Batch:
    return Batch(request_of(gateway_span(trace=trace)).SerializeToString(), 1)


def _queue(
    sender: Scripted, merge_bytes: int, delivered: list[Batch], dropped: list[Batch]
) -> ExportQueue:
    """A started one-consumer queue recording what it delivers and drops."""
    queue = ExportQueue(
        sender,
        size=100,
        max_bytes=1 << 24,
        consumers=1,
        merge_bytes=merge_bytes,
        on_delivered=delivered.append,
        on_dropped=lambda b, _: dropped.append(b),
    )
    queue.start()
    return queue


async def _fill(queue: ExportQueue, sender: Scripted, batches: list[Batch]) -> None:
    queue.put(batches[0])
    await sender.started.wait()  # the consumer is busy with the first batch...
    for batch in batches[1:]:  # ...so these wait together
        queue.put(batch)
    sender.gate.set()


async def _run(
    sender: Scripted, batches: list[Batch], merge_bytes: int
) -> tuple[list[Batch], list[Batch]]:
    delivered: list[Batch] = []
    dropped: list[Batch] = []
    queue = _queue(sender, merge_bytes, delivered, dropped)
    await _fill(queue, sender, batches)
    left = await queue.drain(5)
    assert left == []
    return delivered, dropped


def _traces(payload: bytes) -> list[int]:
    request = ExportTraceServiceRequest.FromString(payload)
    return [
        s.trace_id[-1] for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans
    ]


async def test_waiting_batches_go_out_as_one_request() -> None:
    sender = Scripted()
    batches = [_batch(i) for i in range(1, 5)]
    delivered, dropped = await _run(sender, batches, merge_bytes=1 << 20)
    assert [_traces(p) for p in sender.payloads] == [[1], [2, 3, 4]]
    assert delivered == batches and dropped == []


async def test_merging_stops_at_merge_bytes() -> None:
    sender = Scripted()
    batches = [_batch(i) for i in range(1, 6)]
    size = len(batches[0].data)
    delivered, _ = await _run(sender, batches, merge_bytes=2 * size)
    assert [_traces(p) for p in sender.payloads] == [[1], [2, 3], [4, 5]]
    assert sorted(b.data for b in delivered) == sorted(b.data for b in batches)


async def test_no_merging_when_disabled() -> None:
    sender = Scripted()
    await _run(sender, [_batch(i) for i in range(1, 4)], merge_bytes=0)
    assert [_traces(p) for p in sender.payloads] == [[1], [2], [3]]


async def test_refused_merge_is_resent_batch_by_batch() -> None:
    """Only the batch the downstream refuses is dropped; its companions are delivered."""
    bad = _batch(3)
    sender = Scripted(poison=bad.data)
    batches = [_batch(1), _batch(2), bad, _batch(4)]
    delivered, dropped = await _run(sender, batches, merge_bytes=1 << 20)
    assert [_traces(p) for p in sender.payloads] == [[1], [2, 3, 4], [2], [3], [4]]
    assert dropped == [bad]
    assert [b for b in batches if b is not bad] == sorted(delivered, key=batches.index)


async def test_retryable_failure_of_a_merge_requeues_every_batch() -> None:
    sender = Scripted(flaky=True)
    batches = [_batch(i) for i in range(1, 4)]
    delivered, dropped = await _run(sender, batches, merge_bytes=1 << 20)
    assert dropped == [] and sorted(b.data for b in delivered) == sorted(b.data for b in batches)
    assert [_traces(p) for p in sender.payloads] == [[1], [2, 3], [2, 3]]


async def test_drain_waits_for_a_batch_being_requeued() -> None:
    """A retryable failure puts the batch back before it leaves the in-flight set, so a
    drain in progress keeps waiting and sees it delivered."""
    sender = Scripted(flaky=True)
    sender.gate.set()
    delivered: list[Batch] = []
    queue = _queue(sender, 0, delivered, [])
    queue.put(_batch(1))
    queue.put(_batch(2))  # the second send (this one) fails once and is requeued
    left = await queue.drain(5)
    assert left == [] and len(delivered) == 2 and len(sender.payloads) == 3


async def test_merge_failing_unexpectedly_is_resent_batch_by_batch() -> None:
    """A bug in the sender on a merged request costs no batch: each is sent alone."""
    sender = Scripted(second="raise")
    batches = [_batch(i) for i in range(1, 4)]
    delivered, dropped = await _run(sender, batches, merge_bytes=1 << 20)
    assert [_traces(p) for p in sender.payloads] == [[1], [2, 3], [2], [3]]
    assert dropped == [] and sorted(b.data for b in delivered) == sorted(b.data for b in batches)


async def test_shutdown_during_a_merged_export_reports_every_batch_in_it() -> None:
    """Drain's deadline during a merged send: every batch of it comes back undelivered."""
    sender = Scripted(second="hang")
    batches = [_batch(i) for i in range(1, 4)]
    delivered: list[Batch] = []
    queue = _queue(sender, 1 << 20, delivered, [])
    await _fill(queue, sender, batches)
    await sender.second_started.wait()  # the merged send of batches 2 and 3 hangs
    left = await queue.drain(0)
    assert delivered == batches[:1]
    assert sorted(b.data for b in left) == sorted(b.data for b in batches[1:])
