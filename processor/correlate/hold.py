"""Spans waiting for their identity: a bounded buffer ordered by deadline (pure).

The caller supplies the time; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections import deque

from processor.correlate.resolve import SpanFacts
from processor.correlate.usage import Usage
from processor.correlate.wire import Origin


class HeldSpan:
    """One serialized span and what is needed to attribute it later."""

    __slots__ = (
        "deadline_ns",
        "done",
        "facts",
        "origin",
        "present",
        "span",
        "tag",
        "trace_id",
        "usage",
    )

    def __init__(
        self,
        span: bytes,
        origin: Origin,
        trace_id: bytes,
        facts: SpanFacts,
        present: frozenset[str] | None,
        deadline_ns: int,
        tag: int = 0,
        usage: Usage | None = None,
    ) -> None:
        self.span = span
        self.origin = origin
        self.trace_id = trace_id
        self.facts = facts
        self.present = present
        self.deadline_ns = deadline_ns
        self.tag = tag
        self.usage = usage
        self.done = False


class HoldBuffer:
    """FIFO of held spans (every hold has the same length, so FIFO is deadline order).

    Indexed by trace id so that an arriving trace identity releases exactly the
    spans of that trace. Released entries are flagged and skipped lazily, which
    keeps every operation O(released).
    """

    def __init__(self, max_spans: int) -> None:
        self._max = max_spans
        self._queue: deque[HeldSpan] = deque()
        self._by_trace: dict[bytes, list[HeldSpan]] = {}
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def add(self, held: HeldSpan) -> list[HeldSpan]:
        """Hold ``held``; returns the oldest spans forced out when the buffer was full."""
        self._queue.append(held)
        if held.trace_id:
            self._by_trace.setdefault(held.trace_id, []).append(held)
        self._live += 1
        forced = []
        while self._live > self._max:
            forced.append(self._pop_oldest())
        return forced

    def due(self, now_ns: int) -> list[HeldSpan]:
        """Release every span whose deadline has passed."""
        out = []
        while self._queue and (self._queue[0].done or self._queue[0].deadline_ns <= now_ns):
            head = self._queue.popleft()
            if not head.done:
                out.append(self._release(head))
        return out

    def trace(self, trace_id: bytes) -> list[HeldSpan]:
        """Release every span of ``trace_id``."""
        return [self._release(h) for h in self._by_trace.pop(trace_id, ()) if not h.done]

    def release(self, held: HeldSpan) -> HeldSpan:
        """Take one held span out (it is skipped when its deadline comes)."""
        return self._release(held)

    def drain(self) -> list[HeldSpan]:
        """Release everything (shutdown)."""
        out = [self._release(h) for h in self._queue if not h.done]
        self._queue.clear()
        self._by_trace.clear()
        return out

    def _pop_oldest(self) -> HeldSpan:
        while True:
            head = self._queue.popleft()
            if not head.done:
                return self._release(head)

    def _release(self, held: HeldSpan) -> HeldSpan:
        held.done = True
        self._live -= 1
        bucket = self._by_trace.get(held.trace_id)
        if bucket is not None:
            if held in bucket:
                bucket.remove(held)  # a trace holds a handful of spans
            if not bucket:
                del self._by_trace[held.trace_id]
        return held
