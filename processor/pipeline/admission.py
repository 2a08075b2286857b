"""Admission: the glue between the pure correlator, the spool and the export queue.

A request is accepted (and its sender answered) once it is in the queue and,
with a spool, on disk. Its spans then leave in one or more batches: the ones not
held at once, the held ones later. A spooled request is deleted only when every
one of those batches was delivered or permanently refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import structlog
from google.protobuf.message import DecodeError

from processor.correlate.correlator import CorrelationFailed, Correlator, Outcome, Payload
from processor.errors import Backpressure
from processor.export.queue import Batch, ExportQueue
from processor.export.spool import Spool
from processor.model import Session, User
from processor.pipeline.ledger import Ledger
from processor.pipeline.record import Recorder
from processor.wire.received import Received

log = structlog.get_logger("processor.pipeline")
# A failing attribution of released spans is logged at most this often (with the count).
FAILURE_LOG_EVERY_NS = 60 * 1_000_000_000


class Pipeline:
    """Accepts requests, releases held spans, tracks spooled requests to deletion."""

    def __init__(
        self,
        correlator: Correlator,
        queue: ExportQueue,
        ledger: Ledger,
        recorder: Recorder,
        *,
        clock_ns: Callable[[], int],
        retry_after_s: float,
        spool: Spool | None = None,
        on_learned: Callable[[bytes, User], None] | None = None,
    ) -> None:
        self.correlator = correlator
        self.queue = queue
        self._ledger = ledger
        self._recorder = recorder
        self._clock_ns = clock_ns
        self._retry_after_s = retry_after_s
        self._spool = spool
        self._reserved_batches = 0  # admitted, still being written to the spool
        self._reserved_bytes = 0
        self._on_learned = on_learned
        self._metrics = recorder.metrics
        self._failure_logged_ns: int | None = None  # when the last failure was logged
        self._failed_unlogged = 0  # spans failed since then

    def admit(self, raw: bytes) -> Received:
        """Read an Export request's bytes; raises ``DecodeError`` when they are not one
        the service can forward (answer INVALID_ARGUMENT, or 400)."""
        received = Received.parse(raw)
        if received.spans:
            self.correlator.admit(received)
        return received

    async def accept(self, received: Received) -> int:
        """Take responsibility for ``received`` (from :meth:`admit`); returns its span count.

        Raises Backpressure when it cannot be taken now.
        """
        spans, raw = received.spans, received.raw
        if spans == 0:
            return 0
        size = len(raw)
        # Requests past this check but still in their spool write count as queued:
        # otherwise concurrent accepts all pass it and overshoot the queue's bounds.
        if not self.queue.has_room(
            size + self._reserved_bytes, reserved_batches=self._reserved_batches
        ) or (self._spool is not None and not self._spool.has_room(size)):
            raise Backpressure(self._retry_after_s)
        self._reserved_batches += 1
        self._reserved_bytes += size
        try:
            tag = await self._spool.append(raw) if self._spool is not None else 0
        finally:
            self._reserved_batches -= 1
            self._reserved_bytes -= size
        self._process(received, tag)
        return spans

    def session_stored(self, session: Session) -> None:
        """Called for each stored session: release the held spans it explains."""
        self._dispatch(self.correlator.on_session(session, self._clock_ns()))

    def trace_learned(self, trace_id: bytes, user: User) -> None:
        """A trace identity learned on another replica: release its held spans here."""
        self._dispatch(self.correlator.learn_trace(trace_id, user, self._clock_ns()))

    def tick(self) -> None:
        """Release the spans whose hold ran out (called periodically)."""
        self._dispatch(self.correlator.tick(self._clock_ns()))

    def replay(self) -> int:
        """Re-process the requests a previous run left in the spool; returns their number."""
        if self._spool is None:
            return 0
        entries = self._spool.open()
        for entry in entries:
            try:
                received = self.admit(entry.data)
            except DecodeError:
                log.error("spool_entry_undecodable", tag=entry.tag)
                self._spool.remove(entry.tag)
                continue
            self._process(received, entry.tag)
        self._metrics.spool_quarantined.inc(self._spool.quarantined)
        if entries:
            log.info("spool_replayed", requests=len(entries), quarantined=self._spool.quarantined)
        return len(entries)

    async def drain(self, timeout_s: float) -> tuple[int, int]:
        """Shutdown: release every held span, deliver for up to ``timeout_s``.

        Returns (spans delivered late or kept in the spool, spans lost). Without a
        spool, what is still queued at the deadline is lost and logged as such.
        """
        self._dispatch(self.correlator.drain())
        left = await self.queue.drain(timeout_s)
        undelivered = sum(b.spans for b in left)
        if self._spool is not None:
            if undelivered:
                log.warning(
                    "shutdown_spans_spooled",
                    spans=undelivered,
                    spool_requests=len(self._spool),
                    hint="they are replayed at the next start",
                )
            return undelivered, 0
        if undelivered:
            self._metrics.spans_lost.inc(undelivered)
            log.error(
                "shutdown_spans_lost",
                spans=undelivered,
                batches=len(left),
                hint="set exporter.queue.directory to keep them across restarts",
            )
        return 0, undelivered

    # ------------------------------------------------------------------ internals

    def _process(self, received: Received, tag: int) -> None:
        try:
            outcome = self.correlator.receive(received, self._clock_ns(), tag)
        except CorrelationFailed as failed:  # fail open: the request goes on as it came
            log.exception("correlation_failed", hint="the request is forwarded unenriched")
            spans = received.spans
            self._metrics.enrich_failures.inc(spans)
            outcome = Outcome(spans=spans, released=failed.released)
            outcome.current = Payload(received.raw, spans, _one(tag))
        self._ledger.expect(tag, (1 if outcome.current is not None else 0) + outcome.held)
        self._dispatch(outcome)

    def _dispatch(self, outcome: Outcome) -> None:
        """Queue the outcome's payloads first; bookkeeping errors must not lose them."""
        if outcome.current is not None:
            self._enqueue(outcome.current)
        for payload in outcome.released:
            self._enqueue(payload)
        if outcome.failure is not None:
            self._report_failure(outcome.failure, outcome.failed)
        try:
            self._recorder.outcome(outcome)
            if self._on_learned is not None:
                for trace_id, user in outcome.learned:
                    self._on_learned(trace_id, user)
        except Exception:
            log.exception("outcome_bookkeeping_failed", hint="spans were queued; metrics may lag")

    def _report_failure(self, failure: Exception, spans: int) -> None:
        """Log why released spans went out unattributed, at most once a minute."""
        self._failed_unlogged += spans
        now = self._clock_ns()
        last = self._failure_logged_ns
        if last is not None and now - last < FAILURE_LOG_EVERY_NS:
            return
        self._failure_logged_ns = now
        log.error(
            "release_attribution_failed",
            spans=self._failed_unlogged,
            exc_info=failure,
            hint="these held spans were forwarded unattributed (enrich_failures_total)",
        )
        self._failed_unlogged = 0

    def _enqueue(self, payload: Payload) -> None:
        self.queue.put(Batch(payload.data, payload.spans, payload.tags))


def _one(tag: int) -> Counter[int]:
    return Counter({tag: 1})
