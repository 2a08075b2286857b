"""Per-user LLM usage: reading it off spans, labels under a cap, and the metrics."""

from __future__ import annotations

import grpc
import pytest
from conftest import Clock, service_config
from correlation_kit import ANA, MIKE, MS, event, gateway_span, kv, request_of
from fault_kit import EXPORT
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from processor.app.service import Service
from processor.correlate.identity import EmailHasher
from processor.correlate.usage import Price, Usage, UsageReader
from processor.correlate.usage_labels import OTHER, UNKNOWN, UserLabels
from processor.model import User
from processor.tools.sink import TraceSink


def llm_attrs(**overrides: str | int) -> list[KeyValue]:
    """AgentGateway's usage attributes, with overrides."""
    values: dict[str, str | int] = {
        "gen_ai.provider.name": "openai",
        "gen_ai.response.model": "gpt-4o-2024-08-06",
        "gen_ai.usage.input_tokens": 41,
        "gen_ai.usage.output_tokens": 281,
        "http.status": 200,
    }
    values.update(overrides)
    return [kv(k, v) for k, v in values.items()]


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        (llm_attrs(), Usage("openai", "gpt-4o-2024-08-06", 41, 281, 0.0, False)),
        (
            llm_attrs(**{"http.status": 429}),
            Usage("openai", "gpt-4o-2024-08-06", 41, 281, 0.0, True),
        ),
        (
            [*llm_attrs(), kv("agw.ai.usage.cost.total", "0.0123")],
            Usage("openai", "gpt-4o-2024-08-06", 41, 281, 0.0123, False),
        ),
        (
            llm_attrs(**{"gen_ai.response.model": "gpt-4o"}),
            Usage("openai", "gpt-4o", 41, 281, (41 * 2.5 + 281 * 10) / 1e6, False),
        ),
        (
            llm_attrs(**{"gen_ai.usage.input_tokens": "12"}),
            Usage("openai", "gpt-4o-2024-08-06", 12, 281, 0.0, False),
        ),
        ([kv("http.method", "GET")], None),
    ],
    ids=["plain", "error", "gateway-priced", "price-table", "tokens-as-string", "not-llm"],
)
def test_usage_reader(attrs: list[KeyValue], expected: Usage | None) -> None:
    """Provider, model, tokens, cost (gateway's first, else the price table) and errors."""
    reader = UsageReader({"GPT-4o": Price(2.5, 10)})
    got = reader.read(attrs)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert got._replace(cost_usd=round(got.cost_usd, 9)) == expected._replace(
            cost_usd=round(expected.cost_usd, 9)
        )


def test_user_labels_cap_and_hash() -> None:
    """The first users keep their label, later ones are 'other'; hash mode hides emails."""
    labels = UserLabels(2, team_of=lambda u: "research" if u.id == "mike" else "")
    assert labels(MIKE) == (MIKE.email, "research")
    assert labels(ANA) == (ANA.email, "none")
    assert labels(User(id="carl")) == (OTHER, "none")
    assert labels(MIKE) == (MIKE.email, "research")
    assert labels(None) == (UNKNOWN, "none")
    hasher = EmailHasher(b"k" * 16)
    hashed = UserLabels(5, mode="hash", hasher=hasher)
    assert hashed(MIKE)[0] == hasher(MIKE.email)
    hidden = UserLabels(5, hasher=hasher, hide_emails=True)  # identity.hash_emails
    assert hidden(MIKE)[0] == hasher(MIKE.email)
    by_id = UserLabels(5, mode="id", hasher=hasher)
    assert by_id(MIKE)[0] == MIKE.id
    assert by_id(User(email="x@example.com"))[0] == hasher("x@example.com")
    assert UserLabels(5, mode="id")(User(email="x@example.com"))[0] == "no-id"


async def test_usage_metrics_by_user(sink: TraceSink, clock: Clock) -> None:
    """Usage of attributed and unattributed calls lands on /metrics by user and model."""
    svc = Service(service_config(sink.endpoint), clock_ns=clock)
    await svc.start()
    try:
        t0 = clock.now_ns
        svc.store.add(event(MIKE, t0 - 300 * MS))
        request = request_of(
            gateway_span(trace=1, start=t0, extra=llm_attrs()),
            gateway_span(trace=2, start=t0 + 100 * MS, extra=llm_attrs(**{"http.status": 500})),
            gateway_span(trace=3, start=t0, src="10.9.9.9:1", extra=llm_attrs()),
        )
        async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
            call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            await call(request.SerializeToString(), timeout=10)
        await sink.wait_for_spans(3)
    finally:
        await svc.shutdown(grace_s=1.0)
    sample = svc.metrics.registry.get_sample_value
    mike = {"user": MIKE.email, "team": "none", "provider": "openai", "model": "gpt-4o-2024-08-06"}
    assert sample("user_enricher_llm_requests_total", mike) == 2
    assert sample("user_enricher_llm_errors_total", mike) == 1
    assert sample("user_enricher_llm_tokens_total", {**mike, "direction": "output"}) == 562
    nobody = {**mike, "user": "unknown"}
    assert sample("user_enricher_llm_requests_total", nobody) == 1
