"""What the span path keeps across requests stays right when its sources change.

Long-session answers per address are kept until that address's sessions
change; LLM usage is summed by encoded key and decoded when read. Each test
changes the source between two requests and checks the second sees it.
"""

from __future__ import annotations

from collections.abc import Hashable

import pytest
from correlation_kit import ANA, GW, MIKE, MS, T0, Kit, S, gateway_span, kv, request_of

from processor.correlate import usage_tally
from processor.correlate.usage import USAGE_KEYS, Price, UsageKey, UsageReader, add_usage
from processor.correlate.usage_labels import UserLabels
from processor.correlate.usage_tally import UsageTally
from processor.export.queue import Batch
from processor.identity.directory import parse_directory
from processor.identity.sessions.memory import MemorySessionStore
from processor.metrics import Metrics
from processor.model import Session, User
from processor.pipeline import Ledger, Pipeline, Recorder
from processor.wire.columns import ColumnReader
from processor.wire.received import Received

HOUR = 3600 * S


def test_a_stamp_changes_with_every_change_to_an_address_sessions() -> None:
    """add, close and expiry each give a new stamp; another address is unaffected."""
    store = MemorySessionStore(100)
    assert store.stamp(GW) == 0
    store.add(Session(GW, MIKE, T0, T0 + HOUR))
    stamps = [store.stamp(GW)]
    store.add(Session("10.1.1.1", ANA, T0, T0 + HOUR))
    assert store.stamp(GW) == stamps[-1]
    store.add(Session(GW, ANA, T0, T0 + HOUR))
    stamps.append(store.stamp(GW))
    store.close(GW, ANA.key, T0 + S)
    stamps.append(store.stamp(GW))
    store.expire(T0 + 2 * HOUR)
    stamps.append(store.stamp(GW))
    assert len(set(stamps)) == len(stamps)


def test_a_kept_answer_for_an_address_gives_way_to_a_new_session() -> None:
    """One user's session, then a second user's on the same address: the next
    request is ambiguous, not still the first user's."""
    kit = Kit()
    kit.add(Session(GW, MIKE, T0 - HOUR, T0 + HOUR))
    for trace in (1, 2):  # the second request is answered from what the first kept
        out = kit.receive(request_of(gateway_span(trace=trace, start=T0 + trace * MS)))
        assert out.attributed[("session", "high")] == 1
    kit.add(Session(GW, ANA, T0 - HOUR, T0 + HOUR))
    out = kit.receive(request_of(gateway_span(trace=3, start=T0 + 3 * MS)))
    assert out.attributed[("session", "ambiguous")] == 1


def test_a_kept_answer_ends_where_the_session_ends() -> None:
    """A span after the session's end is not named by the answer kept before it."""
    kit = Kit()
    kit.add(Session(GW, MIKE, T0 - HOUR, T0 + S))
    assert kit.receive(request_of(gateway_span(trace=1))).attributed[("session", "high")] == 1
    out = kit.receive(request_of(gateway_span(trace=2, start=T0 + 2 * S)))
    assert out.unattributed == 1


def test_a_new_directory_replaces_kept_answers() -> None:
    """The directory is swapped on reload: its address entries apply at once."""
    kit = Kit()
    assert kit.receive(request_of(gateway_span(trace=1))).unattributed == 1
    kit.correlator.directory = parse_directory(
        {"users": [{"id": "plat", "email": "platform@example.com", "addresses": [GW]}]}
    )
    out = kit.receive(request_of(gateway_span(trace=2, start=T0 + 10 * MS)))
    assert out.attributed[("directory", "high")] == 1


def test_the_tally_gives_what_reading_each_span_gives() -> None:
    """Summed by encoded key and decoded once per row, or read span by span: the same
    totals (tokens, cost from the gateway or the price table, errors)."""
    reader = UsageReader({"gpt-4o": Price(2.5, 10.0)})
    cases = [
        ("gpt-4o", [kv("gen_ai.provider.name", "openai")]),
        ("", [kv("gen_ai.provider.name", "openai"), kv("gen_ai.response.model", "gpt-4o")]),
        (
            "claude",
            [kv("gen_ai.provider.name", "anthropic"), kv("agw.ai.usage.cost.total", "0.25")],
        ),
        ("gpt-4o", [kv("gen_ai.provider.name", "openai"), kv("http.status", 503)]),
        ("gpt-4o", [kv("route", "not an LLM call")]),
    ]
    request = request_of(
        *(
            gateway_span(
                trace=i + 1,
                model=model,
                extra=[*attrs, kv("gen_ai.usage.input_tokens", 100 * (i + 1))],
            )
            for i, (model, attrs) in enumerate(cases)
        )
    )
    received = Received.parse(request.SerializeToString())
    columns = ColumnReader(USAGE_KEYS).read(received.span_bytes())
    assert columns is not None
    users: dict[Hashable, User | None] = {0: MIKE, 1: ANA}
    owners = [0, 1, 0, 0, 1]
    tally = UsageTally(reader)
    tally.add_users([users[owner] for owner in owners], columns.values)
    expected: dict[UsageKey, list[float]] = {}
    reader.begin(received.raw)
    for owner, span in zip(owners, request.resource_spans[0].scope_spans[0].spans, strict=True):
        used = reader.read(span.attributes)
        if used is not None:
            add_usage(expected, users[owner], used)
    got = tally.drain()
    assert len(got) == 3
    assert {k: [round(v, 9) for v in row] for k, row in got.items()} == {
        k: [round(v, 9) for v in row] for k, row in expected.items()
    }
    assert tally.drain() == {}  # it started over


def test_a_full_tally_spills_into_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its row limit the tally empties into the outcome the pipeline records."""
    monkeypatch.setattr(usage_tally, "DEFAULT_LIMIT", 2)
    kit = Kit(usage=UsageReader())
    third = User(id="third")
    for i, user in enumerate([MIKE, ANA, third]):
        kit.add(Session(f"10.0.0.{i + 1}", user, T0 - HOUR, T0 + HOUR))
    spilled = []
    for i in range(3):
        span = gateway_span(
            trace=i + 1, src=f"10.0.0.{i + 1}:4000", extra=[kv("gen_ai.provider.name", "x")]
        )
        out = kit.receive(request_of(span))
        spilled.append(sorted(user.key for user, _, _ in out.usage if user is not None))
    assert spilled == [[], [ANA.key, MIKE.key], []]
    assert [user for user, _, _ in kit.correlator.usage_totals()] == [third]


class _Queue:
    """Stands in for the export queue: room for everything, keeps what is put."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def has_room(self, size: int, reserved_batches: int = 0) -> bool:
        return True

    def put(self, batch: Batch) -> None:
        self.batches.append(batch)


def _exposition(columns: bool) -> dict[str, float]:
    """The service's own series after the same traffic, read by one path or the other."""
    kit = Kit(usage=UsageReader({"gpt-4o": Price(2.5, 10.0)}), hold_ms=1000)
    kit.correlator._columns_enabled = columns
    kit.add(Session(GW, MIKE, T0 - HOUR, T0 + HOUR))
    kit.add(Session("10.0.0.2", ANA, T0 - HOUR, T0 + HOUR))
    metrics = Metrics()
    recorder = Recorder(
        metrics, policy="skip", labels=UserLabels(100), usage_totals=kit.correlator.usage_totals
    )
    pipeline = Pipeline(
        kit.correlator,
        _Queue(),  # type: ignore[arg-type]
        Ledger(metrics),
        recorder,
        clock_ns=lambda: T0,
        retry_after_s=1.0,
    )
    for i in range(6):
        src = f"{GW}:4000" if i % 2 else "10.0.0.2:4000"
        extra = [kv("gen_ai.provider.name", "openai"), kv("gen_ai.usage.input_tokens", 10 * i)]
        if i == 5:
            extra.append(kv("x-openwebui-user-email", "ana.lima@example.com"))
        pipeline._process(
            Received.of(request_of(gateway_span(trace=i + 1, src=src, extra=extra))), 0
        )
    pipeline._dispatch(kit.correlator.tick(T0 + 2 * S))
    text = metrics.scrape().decode() + metrics.scrape().decode()  # new series show at 0 first
    lines = [line.rpartition(" ") for line in text.splitlines()]
    return {
        series: float(value) for series, _, value in lines if series.startswith("user_enricher_")
    }


def test_metrics_are_the_same_whichever_path_read_the_spans() -> None:
    """Usage and span counters read at scrape time from the tally show what the
    reference path (a full decode, counted span by span) shows."""
    columns, reference = _exposition(True), _exposition(False)
    assert columns == pytest.approx(reference, rel=1e-12)  # prices summed in another order
    assert any(series.startswith("user_enricher_llm_requests_total{") for series in columns)
