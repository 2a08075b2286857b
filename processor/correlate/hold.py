"""Spans waiting for their identity, held by the request they came in (pure).

A request's held spans form one :class:`HeldGroup`: their bytes, resources and
scopes, trace ids and the facts the resolver needs, as parallel lists. The
buffer keeps groups in deadline order (every hold has the same length, so that
is arrival order) and indexes them by trace id; deadlines, early releases and
forced releases move groups, or runs of one group's spans, never one object per
span. The caller supplies the time; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import compress, repeat
from typing import NamedTuple

from processor.correlate.usage import Usage
from processor.wire.encoding import Origin


class HeldGroup:
    """The held spans of one request, in request order.

    ``values`` holds the usage columns of the spans (the column path);
    ``usages`` what each span used (the message path); ``principals`` and
    ``present`` are per span when the message path read them.
    """

    __slots__ = (
        "_models",
        "deadline_ns",
        "ips",
        "live",
        "origin",
        "origins",
        "present",
        "principals",
        "spans",
        "starts",
        "tag",
        "trace_ids",
        "usages",
        "values",
        "waiting",
    )

    def __init__(
        self,
        spans: list[bytes],
        origins: list[Origin],
        trace_ids: list[bytes],
        ips: list[str | None],
        starts: list[int],
        models: list[str] | Callable[[], list[str]],  # or how to read them, when needed
        deadline_ns: int,
        tag: int = 0,
        *,
        values: Mapping[str, Sequence[bytes | None]] | None = None,
        usages: list[Usage | None] | None = None,
        principals: list[tuple[tuple[str, str], ...]] | None = None,
        present: list[frozenset[str] | None] | None = None,
    ) -> None:
        self.spans = spans
        self.origins = origins
        # The one resource and scope of every span, when they share one (the usual case).
        self.origin = origins[0] if origins and origins.count(origins[0]) == len(origins) else None
        self.trace_ids = trace_ids
        self.ips = ips
        self.starts = starts
        self._models = models
        self.deadline_ns = deadline_ns
        self.tag = tag
        self.values = values
        self.usages = usages
        self.principals = principals
        self.present = present
        self.waiting = bytearray(b"\x01" * len(spans))  # 1: still held
        self.live = len(spans)

    def __len__(self) -> int:
        return len(self.spans)

    @property
    def models(self) -> list[str]:
        """Each span's model (read when first asked: only request events need them)."""
        models = self._models
        if callable(models):
            models = self._models = models()
        return models

    def take(self, indexes: list[int]) -> list[int]:
        """Mark ``indexes`` released; returns those that were still held."""
        waiting = self.waiting
        taken = [i for i in indexes if waiting[i]]
        for i in taken:
            waiting[i] = 0
        self.live -= len(taken)
        return taken

    def take_all(self) -> list[int]:
        """Release every span still held; returns their indexes."""
        if self.live == len(self.spans):
            taken = list(range(len(self.spans)))
        else:
            taken = list(compress(range(len(self.spans)), self.waiting))
        self.waiting = bytearray(len(self.spans))
        self.live = 0
        return taken

    def take_first(self, count: int) -> list[int]:
        """Release the ``count`` earliest spans still held."""
        if self.live == len(self.spans) and count < self.live:
            taken = list(range(count))
            self.waiting[:count] = bytes(count)
            self.live -= count
            return taken
        if count >= self.live:
            return self.take_all()
        held = list(compress(range(len(self.spans)), self.waiting))[:count]
        return self.take(held)


class Piece(NamedTuple):
    """Spans of one group released together."""

    group: HeldGroup
    indexes: list[int]


class HoldBuffer:
    """Held groups in deadline order, indexed by trace id; at most ``max_spans`` spans.

    Released spans are flagged in their group and a group leaves the queue when
    its deadline comes or it has nothing left, which keeps every operation
    proportional to the spans it releases.

    The trace index is built when a trace is first asked for, and kept from then
    on: a deployment where no trace identity ever arrives (no Open WebUI spans,
    no events with a trace id) does not index every held span.
    """

    def __init__(self, max_spans: int) -> None:
        self._max = max_spans
        self._queue: deque[HeldGroup] = deque()
        # trace id -> the group (or groups) holding spans of that trace
        self._by_trace: dict[bytes, HeldGroup | list[HeldGroup]] = {}
        self._indexed = False  # whether _by_trace is kept (see the class docstring)
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def add(self, group: HeldGroup) -> list[Piece]:
        """Hold ``group``; returns the oldest spans forced out when the buffer is full."""
        if not len(group):
            return []
        self._queue.append(group)
        if self._indexed:
            self._index_group(group)
        self._live += group.live
        forced: list[Piece] = []
        while self._live > self._max:
            head = self._queue[0]
            if not head.live:
                self._pop()
                continue
            taken = head.take_first(self._live - self._max)
            self._live -= len(taken)
            forced.append(Piece(head, taken))
            if not head.live:
                self._pop()
        return forced

    def due(self, now_ns: int) -> list[Piece]:
        """Release every span whose deadline has passed."""
        out: list[Piece] = []
        queue = self._queue
        while queue and (not queue[0].live or queue[0].deadline_ns <= now_ns):
            head = queue[0]
            if head.live:
                taken = head.take_all()
                self._live -= len(taken)
                out.append(Piece(head, taken))
            self._pop()
        return out

    def trace(self, trace_id: bytes) -> list[Piece]:
        """Release every held span of ``trace_id``."""
        self._index_all()
        found = self._by_trace.pop(trace_id, None)
        if found is None:
            return []
        out: list[Piece] = []
        for group in found if isinstance(found, list) else (found,):
            taken = group.take(_positions(group.trace_ids, trace_id))
            if taken:
                self._live -= len(taken)
                out.append(Piece(group, taken))
        return out

    def traces(self, trace_ids: Collection[bytes]) -> list[Piece]:
        """Release every held span of each of ``trace_ids`` (one look-up when none is held)."""
        self._index_all()
        if not self._by_trace or self._by_trace.keys().isdisjoint(trace_ids):
            return []
        return [piece for trace_id in trace_ids for piece in self.trace(trace_id)]

    def release(self, group: HeldGroup) -> list[int]:
        """Take the rest of ``group`` out (it leaves the queue when its turn comes)."""
        taken = group.take_all()
        self._live -= len(taken)
        self._forget(group)
        return taken

    def drain(self) -> list[Piece]:
        """Release everything (shutdown)."""
        out = []
        for group in self._queue:
            if group.live:
                taken = group.take_all()
                out.append(Piece(group, taken))
        self._queue.clear()
        self._by_trace.clear()
        self._live = 0
        return out

    # ------------------------------------------------------------------ index

    def _index_all(self) -> None:
        """Start keeping the trace index: every group held so far, in order."""
        if not self._indexed:
            self._indexed = True
            for group in self._queue:
                self._index_group(group)

    def _index_group(self, group: HeldGroup) -> None:
        index, trace_ids = self._by_trace, group.trace_ids
        if index.keys().isdisjoint(trace_ids):
            index.update(zip(trace_ids, repeat(group)))
        else:
            for trace_id in trace_ids:
                self._index(trace_id, group)

    def _index(self, trace_id: bytes, group: HeldGroup) -> None:
        found = self._by_trace.get(trace_id)
        if found is None:
            self._by_trace[trace_id] = group
        elif isinstance(found, list):
            if group not in found:
                found.append(group)
        elif found is not group:
            self._by_trace[trace_id] = [found, group]

    def _pop(self) -> None:
        self._forget(self._queue.popleft())

    def _forget(self, group: HeldGroup) -> None:
        """Drop the index entries that point at ``group``."""
        if not self._indexed:
            return
        index = self._by_trace
        for trace_id in group.trace_ids:
            found = index.get(trace_id)
            if found is group:
                del index[trace_id]
            elif isinstance(found, list) and group in found:
                found.remove(group)
                if len(found) == 1:
                    index[trace_id] = found[0]


def _positions(items: list[bytes], value: bytes) -> list[int]:
    """Every index of ``value`` in ``items`` (searched in C)."""
    out: list[int] = []
    at = -1
    while True:
        try:
            at = items.index(value, at + 1)
        except ValueError:
            return out
        out.append(at)
