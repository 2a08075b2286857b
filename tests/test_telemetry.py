"""The telemetry listener: health and /metrics apart from the session API, behind a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from conftest import TOKEN, Clock, service_config
from correlation_kit import MIKE, MS, event, gateway_span, request_of
from fault_kit import EXPORT
from test_usage import llm_attrs

from processor.app.config import parse_config
from processor.app.service import Service
from processor.correlate.identity import EmailHasher
from processor.errors import ConfigError
from processor.tools.sink import TraceSink

METRICS_TOKEN = "scrape-token-0123456789"


async def get(address: str | None, path: str, token: str | None = None) -> tuple[int, str]:
    """GET ``path`` on ``address``; the status and body."""
    assert address is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://{address}{path}", headers=headers) as reply,
    ):
        return reply.status, await reply.text()


async def started(sink: TraceSink, telemetry: dict[str, Any]) -> Service:
    """A started service with the given telemetry section."""
    service = Service(service_config(sink.endpoint, telemetry=telemetry))
    await service.start()
    return service


@pytest.fixture
async def apart(sink: TraceSink) -> AsyncIterator[Service]:
    """Telemetry on its own port, /metrics behind a token."""
    service = await started(sink, {"endpoint": "127.0.0.1:0", "token": METRICS_TOKEN})
    yield service
    await service.shutdown(grace_s=1.0)


async def test_the_api_port_serves_no_metrics_once_telemetry_is_apart(apart: Service) -> None:
    """/metrics moves to the telemetry port; the API port keeps its probes and its API."""
    assert apart.addresses.telemetry not in (None, apart.addresses.http)
    assert (await get(apart.addresses.http, "/metrics", METRICS_TOKEN))[0] == 404
    assert (await get(apart.addresses.http, "/metrics", TOKEN))[0] == 404
    assert (await get(apart.addresses.http, "/readyz"))[0] == 200


async def test_metrics_need_the_token_and_health_does_not(apart: Service) -> None:
    """Without the bearer token /metrics is 401 and shows nothing; probes stay open."""
    status, body = await get(apart.addresses.telemetry, "/metrics")
    assert status == 401
    assert "user_enricher" not in body
    assert (await get(apart.addresses.telemetry, "/metrics", TOKEN))[0] == 401
    status, body = await get(apart.addresses.telemetry, "/metrics", METRICS_TOKEN)
    assert status == 200
    assert "user_enricher_spans_received_total" in body
    for probe in ("/healthz", "/readyz", "/readyz/identity"):
        assert (await get(apart.addresses.telemetry, probe))[0] == 200


async def test_a_metrics_token_also_guards_metrics_on_the_api_port(sink: TraceSink) -> None:
    """Without a telemetry endpoint the token protects /metrics where it is served."""
    service = await started(sink, {"token": METRICS_TOKEN})
    try:
        assert service.addresses.telemetry is None
        assert (await get(service.addresses.http, "/metrics"))[0] == 401
        assert (await get(service.addresses.http, "/metrics", METRICS_TOKEN))[0] == 200
    finally:
        await service.shutdown(grace_s=1.0)


async def test_by_default_metrics_stay_open_on_the_api_port(service: Service) -> None:
    """The default is unchanged: /metrics on the API port, no token."""
    assert service.addresses.telemetry is None
    status, body = await get(service.addresses.http, "/metrics")
    assert status == 200
    assert "user_enricher_spans_received_total" in body


async def test_shutdown_closes_the_telemetry_listener(sink: TraceSink) -> None:
    """After shutdown nothing answers on the telemetry port."""
    service = await started(sink, {"endpoint": "127.0.0.1:0"})
    address = service.addresses.telemetry
    assert (await get(address, "/healthz"))[0] == 200
    await service.shutdown(grace_s=1.0)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(address, "/healthz")


# --------------------------------------------------------------------------- usage.user_label

HASH_KEY = "hash-key-0123456789abcdef"


async def scrape_after_one_call(
    sink: TraceSink, clock: Clock, usage: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> tuple[str, str, str]:
    """One attributed LLM call by Mike; /metrics, /readyz and the logs, as text."""
    config = service_config(
        sink.endpoint,
        usage=usage,
        identity={"hash_key": HASH_KEY},
        telemetry={"endpoint": "127.0.0.1:0"},
        logging={"level": "debug", "format": "json"},
    )
    service = Service(config, clock_ns=clock)
    await service.start()
    try:
        service.store.add(event(MIKE, clock.now_ns - 300 * MS))
        request = request_of(gateway_span(trace=1, start=clock.now_ns, extra=llm_attrs()))
        async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
            call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
            await call(request.SerializeToString(), timeout=10)
        await sink.wait_for_spans(1)
        metrics = (await get(service.addresses.telemetry, "/metrics"))[1]
        health = (await get(service.addresses.telemetry, "/readyz"))[1]
    finally:
        await service.shutdown(grace_s=1.0)
    captured = capsys.readouterr()
    return metrics, health, captured.out + captured.err


@pytest.mark.parametrize(
    ("mode", "label"),
    [
        ("email", MIKE.email),
        ("id", MIKE.id),
        ("hash", EmailHasher(HASH_KEY.encode())(MIKE.email)),
    ],
)
async def test_each_user_label_on_a_real_scrape(
    sink: TraceSink, clock: Clock, capsys: pytest.CaptureFixture[str], mode: str, label: str
) -> None:
    """The usage series carry the chosen label; with id or hash no email is anywhere."""
    metrics, health, logs = await scrape_after_one_call(sink, clock, {"user_label": mode}, capsys)
    assert f'user="{label}"' in metrics
    if mode != "email":
        for text in (metrics, health, logs):
            assert MIKE.email not in text
            assert "example.com" not in text
    # What lands on the span is unchanged: Jaeger still gets the email.
    assert any(
        kv.key == "user.email" and kv.value.string_value == MIKE.email
        for span in sink.spans()
        for kv in span.attributes
    )


def test_hashed_labels_need_the_key() -> None:
    """``user_label: hash`` without identity.hash_key is a config error naming both."""
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "exporter": {"endpoint": "j:4317"},
                "api": {"enabled": False},
                "usage": {"user_label": "hash"},
            },
            base_dir=Path.cwd(),
            env={},
        )
    assert str(caught.value.problems[0]).startswith(
        "usage.user_label: hash needs identity.hash_key"
    )
