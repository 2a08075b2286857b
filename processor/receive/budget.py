"""The bytes being read, decompressed and decoded across all requests, bounded (pure).

The export queue bounds what waits for the downstream (``exporter.queue.max_bytes``),
but a request is read and decoded before the queue can refuse it: without a bound
here, many concurrent senders of large requests hold their bodies, decompressed
bodies and decoded views at once, and the process grows until it is killed, with
every queued span. Each receiver takes a request's bytes from one shared budget
before reading (HTTP, from ``Content-Length``) or decoding (gRPC, whose transport
has read the message already) and gives them back once the queue has the request
or refused it. A request that does not fit is refused with the queue's own
backpressure answer (RESOURCE_EXHAUSTED with RetryInfo, HTTP 429 with Retry-After),
so a sender treats both alike.

A request larger than the whole budget is still admitted when nothing else is in
flight, so ``receiver.max_message_bytes`` stays the only limit on one request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from processor.errors import Backpressure


class InflightBudget:
    """Bytes in flight across requests, at most ``limit`` (see the module docstring)."""

    __slots__ = ("limit", "peak", "refused", "retry_after_s", "used")

    def __init__(self, limit: int, retry_after_s: float) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.used = 0
        self.peak = 0
        self.refused = 0

    def take(self, n: int, own: int = 0) -> None:
        """Reserve ``n`` bytes (besides ``own`` already held); Backpressure if they do not fit."""
        if self.used > own and self.used + n > self.limit:
            self.refused += 1
            raise Backpressure(self.retry_after_s, reason="receiver in-flight bytes")
        self.used += n
        self.peak = max(self.peak, self.used)

    def give(self, n: int) -> None:
        """Return ``n`` reserved bytes."""
        self.used -= n

    @contextmanager
    def holding(self, n: int) -> Iterator[Reservation]:
        """Reserve ``n`` bytes for the block (it may grow); all are returned at its end."""
        self.take(n)
        reservation = Reservation(self, n)
        try:
            yield reservation
        finally:
            self.give(reservation.bytes)


class Reservation:
    """Bytes one request holds; :meth:`grow` when it turns out larger (decompressed)."""

    __slots__ = ("_budget", "bytes")

    def __init__(self, budget: InflightBudget, n: int) -> None:
        self._budget = budget
        self.bytes = n

    def grow(self, n: int) -> None:
        """Hold ``n`` more bytes; raises Backpressure when they do not fit."""
        self._budget.take(n, own=self.bytes)
        self.bytes += n
