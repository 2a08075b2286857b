"""Delivery bookkeeping: which spooled requests still have spans on the way.

A spooled request is deleted once every batch carrying its spans was delivered
or refused for good. The export queue reports each outcome here.
"""

from __future__ import annotations

import structlog

from processor.errors import DownstreamError
from processor.export.queue import Batch
from processor.export.spool import Spool
from processor.metrics import Metrics

log = structlog.get_logger("processor.pipeline")


class Ledger:
    """Counts, per spool tag, the units not yet delivered; the queue's callbacks."""

    def __init__(self, metrics: Metrics, spool: Spool | None = None) -> None:
        self._metrics = metrics
        self._spool = spool
        # Spool tag -> units of that request not yet delivered (1 for the part
        # sent at once, 1 per held span).
        self._outstanding: dict[int, int] = {}

    def expect(self, tag: int, units: int) -> None:
        """A request's spans leave in ``units`` batches; with none, it is done already."""
        if self._spool is None:
            return
        if units:
            self._outstanding[tag] = units
        else:
            self._spool.remove(tag)

    def delivered(self, batch: Batch) -> None:
        """Queue callback: the downstream acknowledged ``batch``."""
        self._metrics.spans_exported.inc(batch.spans)
        self._settle(batch)

    def dropped(self, batch: Batch, exc: DownstreamError) -> None:
        """Queue callback: the downstream refused ``batch`` for good."""
        self._metrics.export_failures.add((exc.code,))
        self._metrics.spans_dropped.add((exc.code,), batch.spans)
        log.error(
            "export_dropped",
            spans=batch.spans,
            code=exc.code,
            error=str(exc),
            hint="the downstream refused this batch permanently; it is not retried",
        )
        self._settle(batch)

    def requeued(self, batch: Batch) -> None:
        """Queue callback: retries ran out; the batch went back to the end of the queue."""
        self._metrics.export_requeued.inc()

    def _settle(self, batch: Batch) -> None:
        if self._spool is not None:
            for tag, n in batch.tags.items():
                left = self._outstanding.get(tag, 0) - n
                if left > 0:
                    self._outstanding[tag] = left
                else:
                    self._outstanding.pop(tag, None)
                    try:
                        self._spool.remove(tag)
                    except OSError as exc:
                        log.error("spool_remove_failed", tag=tag, error=str(exc))
