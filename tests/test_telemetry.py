"""The telemetry listener: health and /metrics apart from the session API, behind a token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import TOKEN, service_config

from processor.service import Service
from processor.sink import TraceSink

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
