"""Replicas sharing sessions and trace identities through a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from conftest import Clock, push_sessions, service_config, wait_until
from correlation_kit import ANA, GW, MIKE, MS, gateway_span, request_of, webui_span, who
from fault_kit import EXPORT
from redis_kit import RedisServer

from processor.app.service import Service
from processor.tools.sink import TraceSink


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server, stopped at the end."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def replica(sink: TraceSink, clock: Clock, url: str, **correlation: Any) -> Service:
    """A service sharing its sessions through ``url``."""
    config = service_config(
        sink.endpoint,
        sessions={"store": url, "sweep_interval": "1h"},
        correlation={"hold": 0, **correlation},
    )
    return Service(config, clock_ns=clock)


@pytest.fixture
async def replicas(
    sink: TraceSink, clock: Clock, redis_server: RedisServer
) -> AsyncIterator[tuple[Service, Service]]:
    """Two started replicas on one Redis, both in sync."""
    a = replica(sink, clock, redis_server.url)
    b = replica(sink, clock, redis_server.url)
    await a.start()
    await b.start()
    await wait_until(lambda: a.identity_ready and b.identity_ready)
    yield a, b
    await a.shutdown(grace_s=1.0)
    await b.shutdown(grace_s=1.0)


def rfc3339(t_ns: int) -> str:
    """RFC 3339 with milliseconds."""
    return datetime.fromtimestamp(t_ns / 1e9, UTC).isoformat(timespec="milliseconds")


async def push(svc: Service, user_id: str, email: str, at_ns: int) -> None:
    """Push one request event for ``GW`` through the replica's HTTP API."""
    body = {
        "kind": "request",
        "source_ip": GW,
        "user": {"id": user_id, "email": email},
        "start": rfc3339(at_ns),
    }
    await push_sessions(svc, body)


async def export(svc: Service, payload: bytes) -> None:
    """One OTLP Export call to a replica."""
    async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        await call(payload, timeout=10)


async def identity_status(svc: Service) -> tuple[int, int]:
    """(/readyz, /readyz/identity) status codes."""
    async with aiohttp.ClientSession() as client:
        codes = []
        for path in ("/readyz", "/readyz/identity"):
            async with client.get(f"http://{svc.addresses.http}{path}") as reply:
                codes.append(reply.status)
        return codes[0], codes[1]


async def test_session_pushed_to_one_replica_attributes_spans_on_another(
    replicas: tuple[Service, Service], sink: TraceSink, clock: Clock
) -> None:
    """An event pushed to replica A attributes a span that replica B receives."""
    a, b = replicas
    t0 = clock.now_ns
    await push(a, MIKE.id, MIKE.email, t0 - 300 * MS)
    await wait_until(lambda: len(b.store) == 1)
    await export(b, request_of(gateway_span(start=t0)).SerializeToString())
    (span,) = await sink.wait_for_spans(1)
    assert who(span) == (MIKE.email, "session", "high")


async def test_trace_identity_crosses_replicas(
    sink: TraceSink, clock: Clock, redis_server: RedisServer
) -> None:
    """A gateway span held on B is released by Open WebUI's span arriving at A."""
    a = replica(sink, clock, redis_server.url, hold="1h")
    b = replica(sink, clock, redis_server.url, hold="1h")
    await a.start()
    await b.start()
    try:
        await wait_until(lambda: a.identity_ready and b.identity_ready)
        await export(b, request_of(gateway_span(trace=42)).SerializeToString())
        assert b.correlator.held == 1
        await export(a, request_of(webui_span(42, ANA), service="open-webui").SerializeToString())
        spans = await sink.wait_for_spans(2)
    finally:
        await a.shutdown(grace_s=1.0)
        await b.shutdown(grace_s=1.0)
    gateway = next(s for s in spans if s.name == "POST /*")
    assert who(gateway) == (ANA.email, "trace", "exact")


async def test_redis_restart_keeps_serving_and_recovers(
    sink: TraceSink, clock: Clock, redis_server: RedisServer
) -> None:
    """Without Redis, spans flow and local pushes work; on its return, state is shared again."""
    a = replica(sink, clock, redis_server.url)
    await a.start()
    late: Service | None = None
    try:
        await wait_until(lambda: a.identity_ready)
        redis_server.stop()
        await wait_until(lambda: not a.identity_ready)
        assert await identity_status(a) == (200, 503)
        t0 = clock.now_ns
        await push(a, ANA.id, ANA.email, t0 - 200 * MS)  # kept locally and in the outbox
        await export(a, request_of(gateway_span(start=t0)).SerializeToString())
        (span,) = await sink.wait_for_spans(1)
        assert who(span) == (ANA.email, "session", "high")
        redis_server.start()
        await wait_until(lambda: a.identity_ready)
        assert await identity_status(a) == (200, 200)
        late = replica(sink, clock, redis_server.url)
        await late.start()
        await wait_until(lambda: len(late.store) == 1)  # the outbox reached Redis
    finally:
        await a.shutdown(grace_s=1.0)
        if late is not None:
            await late.shutdown(grace_s=1.0)
    connected = a.metrics.registry.get_sample_value("user_enricher_session_store_connected")
    assert connected == 1


async def test_replica_started_later_loads_the_state(
    replicas: tuple[Service, Service], sink: TraceSink, clock: Clock, redis_server: RedisServer
) -> None:
    """A replica that starts after the pushes gets them from Redis, not from pub/sub."""
    a, _ = replicas
    for n in range(5):
        await push(a, f"u{n}", f"user{n}@example.com", clock.now_ns - n * 1000 * MS)
    late = replica(sink, clock, redis_server.url)
    await late.start()
    try:
        await wait_until(lambda: len(late.store) == 5)
    finally:
        await late.shutdown(grace_s=1.0)
