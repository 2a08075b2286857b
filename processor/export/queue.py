"""The export queue: bounded, drained by concurrent consumers through the retry chain.

Accepting a batch into the queue is what lets the receiver answer its sender.
When the queue is full the receiver refuses (backpressure) instead of accepting
and dropping. A batch leaves the queue only when the downstream acknowledged it,
or refused it permanently (dropped, loudly); a batch whose retries ran out goes
back to the end of the queue.

A consumer that finds several batches waiting sends them as one request, up to
``merge_bytes``: the concatenation of encoded ExportTraceServiceRequests is the
encoding of one request holding all their spans. Fewer, larger calls cost less
per span on both ends. A merged request the downstream refuses for good is
sent again batch by batch, so only the bad batch is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from processor.errors import DownstreamError
from processor.export import SHUTDOWN_CODE, Sender

log = structlog.get_logger("processor.export.queue")


@dataclass(slots=True)
class Batch:
    """One serialized ExportTraceServiceRequest waiting for the downstream.

    ``tags`` counts, per spool entry, how many of that entry's units this batch
    carries (see ``processor.pipeline``); empty without a spool.
    """

    data: bytes
    spans: int
    tags: Counter[int] = field(default_factory=Counter)
    queued_s: float = 0.0  # when it first entered the queue (the queue's clock)


Done = Callable[[Batch], None]
Dropped = Callable[[Batch, DownstreamError], None]


class ExportQueue:
    """Bounded by requests and bytes; ``consumers`` tasks send through ``sender``."""

    def __init__(
        self,
        sender: Sender,
        *,
        size: int,
        max_bytes: int,
        consumers: int,
        on_delivered: Done,
        on_dropped: Dropped,
        on_requeued: Done | None = None,
        merge_bytes: int = 0,
        on_latency: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sender = sender
        self._merge_bytes = merge_bytes
        self._size = size
        self._max_bytes = max_bytes
        self._consumers = consumers
        self._on_delivered = on_delivered
        self._on_dropped = on_dropped
        self._on_requeued = on_requeued
        self._on_latency = on_latency
        self._clock = clock
        self._waiting: asyncio.Queue[Batch] = asyncio.Queue()
        self._in_flight: dict[int, Batch] = {}
        self._bytes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def __len__(self) -> int:
        """Batches waiting or being sent."""
        return self._waiting.qsize() + len(self._in_flight)

    @property
    def bytes(self) -> int:
        """Bytes of the batches waiting or being sent."""
        return self._bytes

    def has_room(self, size: int, *, reserved_batches: int = 0) -> bool:
        """Whether one more batch of ``size`` bytes may be accepted.

        ``reserved_batches`` (and their bytes, included in ``size``) are batches
        already admitted that will be put in once their spool write completes.
        """
        return len(self) + reserved_batches < self._size and self._bytes + size <= self._max_bytes

    def start(self) -> None:
        """Start the consumers."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._consume(), name=f"export-{i}") for i in range(self._consumers)
        ]

    def put(self, batch: Batch) -> None:
        """Queue ``batch``. Callers check :meth:`has_room` first for new requests; spans
        the service already answered for (released from holding, replayed) always go in.
        """
        self._bytes += len(batch.data)
        if not batch.queued_s:  # a requeued batch keeps its first time
            batch.queued_s = self._clock()
        self._idle.clear()
        self._waiting.put_nowait(batch)

    async def drain(self, timeout_s: float) -> list[Batch]:
        """Wait until everything was delivered or ``timeout_s`` passed; stop the consumers.

        Returns the batches that were not delivered (waiting, or interrupted in flight).
        """
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            pass
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        left = list(self._in_flight.values())
        while not self._waiting.empty():
            left.append(self._waiting.get_nowait())
        self._in_flight.clear()
        return left

    async def _consume(self) -> None:
        carry: Batch | None = None  # taken from the queue, did not fit the last merge
        while True:
            batch = carry if carry is not None else await self._waiting.get()
            carry = None
            self._in_flight[id(batch)] = batch
            merged = [batch]
            size = len(batch.data)
            while size < self._merge_bytes and not self._waiting.empty():
                more = self._waiting.get_nowait()
                self._in_flight[id(more)] = more
                if size + len(more.data) > self._merge_bytes:
                    carry = more
                    break
                merged.append(more)
                size += len(more.data)
            await self._deliver(merged)

    async def _deliver(self, batches: list[Batch]) -> None:
        """Send ``batches`` as one request and settle each of them.

        A merged request refused for good, or failing in a way we did not expect,
        is sent again batch by batch, so only the batch at fault is dropped.
        """
        try:
            await self._sender.send(b"".join(b.data for b in batches))
        except asyncio.CancelledError:
            raise
        except DownstreamError as exc:
            if exc.code == SHUTDOWN_CODE or (exc.retryable and self._stopping):
                return  # they stay in flight: drain() reports them as not delivered
            if exc.retryable:
                for batch in batches:
                    self._requeue(batch, exc.code)
            elif len(batches) > 1:
                await self._one_by_one(batches)
            else:
                self._finish(batches[0])
                self._on_dropped(batches[0], exc)
            return
        except Exception:  # our bug: never let it kill the consumer
            log.exception("export_failed_unexpectedly", batches=len(batches))
            if len(batches) > 1:
                await self._one_by_one(batches)
            else:
                self._finish(batches[0])
                error = DownstreamError("unexpected error", code="INTERNAL", retryable=False)
                self._on_dropped(batches[0], error)
            return
        now = self._clock()
        for batch in batches:
            self._finish(batch)
            try:
                if self._on_latency is not None:
                    self._on_latency(now - batch.queued_s)
                self._on_delivered(batch)
            except Exception:
                log.exception("delivery_bookkeeping_failed", spans=batch.spans)

    async def _one_by_one(self, batches: list[Batch]) -> None:
        for batch in batches:
            await self._deliver([batch])

    def _requeue(self, batch: Batch, code: str) -> None:
        """Back to the end of the queue. Queued before it leaves the in-flight set, so
        the queue never looks empty meanwhile (a drain would stop waiting)."""
        log.warning("export_requeued", spans=batch.spans, code=code)
        if self._on_requeued is not None:
            self._on_requeued(batch)
        self.put(batch)
        self._finish(batch)

    def _finish(self, batch: Batch) -> None:
        self._in_flight.pop(id(batch), None)
        self._bytes -= len(batch.data)
        if len(self) == 0:
            self._idle.set()
