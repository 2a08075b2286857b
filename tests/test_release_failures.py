"""A release whose attribution raises: its spans still leave (fail open), they are
counted, and the cause reaches the log, at most once a minute (pure, injected clock)."""

from __future__ import annotations

from typing import Any

import pytest
from correlation_kit import GW, MIKE, T0, Kit, S, gateway_span, request_of, sent, who
from structlog.testing import capture_logs
from test_span_path_memos import _Queue

from processor.correlate.usage_labels import UserLabels
from processor.metrics import Metrics
from processor.model import Session
from processor.pipeline.admission import FAILURE_LOG_EVERY_NS, Pipeline
from processor.pipeline.ledger import Ledger
from processor.pipeline.record import Recorder
from processor.wire.received import Received


def test_a_failing_release_sends_its_spans_and_logs_why(monkeypatch: pytest.MonkeyPatch) -> None:
    kit = Kit(hold_ms=1000)
    kit.add(Session(GW, MIKE, T0 - 3600 * S, T0 + 3600 * S))

    def boom(*args: Any, **kwargs: Any) -> None:
        raise ValueError("math domain error")

    monkeypatch.setattr(kit.correlator._releaser, "_decide", boom)
    metrics = Metrics()
    clock = [T0]
    pipeline = Pipeline(
        kit.correlator,
        _Queue(),  # type: ignore[arg-type]
        Ledger(metrics),
        Recorder(metrics, policy="skip", labels=UserLabels(100)),
        clock_ns=lambda: clock[0],
        retry_after_s=1.0,
    )
    outs = []
    with capture_logs() as logs:
        for step, trace in enumerate((1, 2, 3)):
            pipeline._process(Received.of(request_of(gateway_span(trace=trace))), 0)
            clock[0] = T0 + (step + 1) * 2 * S  # past the hold: each tick releases one span
            out = kit.correlator.tick(clock[0])
            outs.append(out)
            pipeline._dispatch(out)
        clock[0] += FAILURE_LOG_EVERY_NS
        pipeline._process(Received.of(request_of(gateway_span(trace=4))), 0)
        pipeline._dispatch(kit.correlator.tick(clock[0] + 2 * S))
    assert [len(sent(out)) for out in outs] == [1, 1, 1]  # nothing kept back
    assert {who(span)[0] for out in outs for span in sent(out)} == {None}
    assert [o.failed for o in outs] == [1, 1, 1]
    failures = [e for e in logs if e["event"] == "release_attribution_failed"]
    # The first at once; the next two within the minute are folded into the one after.
    assert [e["spans"] for e in failures] == [1, 3]
    assert all(isinstance(e["exc_info"], ValueError) for e in failures)
    assert "enrich_failures" in metrics.scrape().decode()
