"""Glue between the pure correlator and the export chain; owns background exports.

The receiver hands each decoded request here and waits for the spans that can
go now; spans released later (their identity arrived, or their hold ran out)
are exported in the background, since their sender already has its answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.correlate.correlator import Correlator, Outcome, Payload
from processor.errors import DownstreamError
from processor.export import Sender
from processor.metrics import Metrics
from processor.model import Session

log = structlog.get_logger("processor.pipeline")


class Pipeline:
    """Receives requests, releases held spans, and records what happened."""

    def __init__(
        self,
        correlator: Correlator,
        sender: Sender,
        metrics: Metrics,
        *,
        clock_ns: Callable[[], int],
        policy: str,
    ) -> None:
        self.correlator = correlator
        self._sender = sender
        self._metrics = metrics
        self._clock_ns = clock_ns
        self._policy = policy
        self._background: set[asyncio.Task[None]] = set()

    async def export(self, request: ExportTraceServiceRequest, raw: bytes) -> int:
        """Attribute ``request`` and deliver what can go now; returns its span count.

        Raises DownstreamError when those spans could not be delivered; held spans
        are the service's responsibility from here on.
        """
        outcome = self.correlator.receive(request, raw, self._clock_ns())
        self._record(outcome)
        self._export_later(outcome.released)
        if outcome.current is not None:
            with self._metrics.export_latency.time():
                await self._sender.send(outcome.current.data)
            self._metrics.spans_exported.inc(outcome.current.spans)
        return outcome.spans

    def session_stored(self, session: Session) -> None:
        """Called for each stored session: release the held spans it explains."""
        self._dispatch(self.correlator.on_session(session, self._clock_ns()))

    def tick(self) -> None:
        """Release the spans whose hold ran out (called periodically)."""
        self._dispatch(self.correlator.tick(self._clock_ns()))

    async def drain(self) -> None:
        """Release every held span and wait for all background exports (shutdown)."""
        self._dispatch(self.correlator.drain())
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _dispatch(self, outcome: Outcome) -> None:
        self._record(outcome)
        self._export_later(outcome.released)

    def _export_later(self, payloads: list[Payload]) -> None:
        for payload in payloads:
            task = asyncio.get_running_loop().create_task(self._send_released(payload))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _send_released(self, payload: Payload) -> None:
        spans = payload.spans
        try:
            with self._metrics.export_latency.time():
                await self._sender.send(payload.data)
        except DownstreamError as exc:
            self._metrics.export_failures.labels(code=exc.code).inc()
            self._metrics.released_export_lost.inc(spans)
            log.error(
                "released_spans_export_failed",
                spans=spans,
                code=exc.code,
                error=str(exc),
                hint="the sender was already answered; these spans are lost",
            )
            return
        self._metrics.spans_exported.inc(spans)

    def _record(self, o: Outcome) -> None:
        m = self._metrics
        if o.spans:
            m.spans_received.inc(o.spans)
        for (method, confidence), count in o.attributed.items():
            if confidence == "ambiguous":
                m.spans_ambiguous.labels(policy=self._policy).inc(count)
            if not (confidence == "ambiguous" and self._policy != "nearest"):
                m.spans_enriched.labels(method=method, confidence=confidence).inc(count)
        if o.unattributed:
            m.spans_unmatched.inc(o.unattributed)
        if o.no_address:
            m.spans_no_address.inc(o.no_address)
        if o.held:
            m.spans_held.inc(o.held)
        for reason, count in (
            ("early", o.released_early),
            ("deadline", o.released_deadline),
            ("forced", o.forced_out),
        ):
            if count:
                m.spans_released.labels(reason=reason).inc(count)
        m.spans_holding.set(self.correlator.held)
