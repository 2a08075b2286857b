"""Connection hygiene on the HTTP listeners: slow and surplus connections are closed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import service_config, wait_until
from fault_kit import batch

from processor.app.service import Service
from processor.tools.sink import TraceSink

SLOW = 1000
HEAD = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"


def split(address: str) -> tuple[str, int]:
    """host, port of ``host:port``."""
    host, port = address.rsplit(":", 1)
    return host, int(port)


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the service closed the connection (EOF or reset)."""
    try:
        return await reader.read(65536) == b"" or await reader.read() == b""
    except ConnectionError:
        return True


async def well_behaved(service: Service) -> int:
    """One proper OTLP/HTTP export; its status."""
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{service.addresses.otlp_http}/v1/traces",
            data=batch(1, 5),
            headers={"Content-Type": "application/x-protobuf"},
        ) as reply,
    ):
        return reply.status


@pytest.fixture
async def guarded(sink: TraceSink) -> AsyncIterator[Service]:
    """A service with short deadlines and room for SLOW + a few connections per listener."""
    connections = {
        "header_timeout": "300ms",
        "body_timeout": "300ms",
        "idle_timeout": "1s",
        "max_http_connections": SLOW + 10,
    }
    svc = Service(service_config(sink.endpoint, connections=connections))
    await svc.start()
    yield svc
    await svc.shutdown(grace_s=1.0)


async def test_a_thousand_slow_senders_are_closed_and_others_still_served(
    guarded: Service,
) -> None:
    """1,000 connections that never finish their headers are all closed by the header
    deadline; a well-behaved sender is answered meanwhile and after."""
    host, port = split(guarded.addresses.otlp_http or "")
    conns = [await asyncio.open_connection(host, port) for _ in range(SLOW)]
    for _, writer in conns:
        writer.write(HEAD[:10])  # a request line, never finished
    assert await well_behaved(guarded) == 200
    async with asyncio.timeout(30):
        closed = await asyncio.gather(*(closed_by_peer(r) for r, _ in conns))
    assert all(closed)
    assert guarded.guards["otlp_http"].timed_out >= SLOW
    assert await well_behaved(guarded) == 200
    for _, writer in conns:
        writer.close()


async def test_a_body_that_never_completes_gets_408(guarded: Service) -> None:
    """Headers promise 100 bytes, 10 come: 408 and the connection closes."""
    host, port = split(guarded.addresses.otlp_http or "")
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(HEAD + b"Content-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\n")
    writer.write(b"\x0a" * 10)
    async with asyncio.timeout(30):
        answer = await reader.read()
    assert answer.startswith(b"HTTP/1.1 408")
    writer.close()


async def test_connections_past_the_cap_are_closed_at_once(sink: TraceSink) -> None:
    """With room for 20, the 21st to 30th connections are closed as they open; the
    first 20 stay until their own deadline, and the port serves again after."""
    connections = {"max_http_connections": 20, "header_timeout": "2s", "idle_timeout": "1s"}
    svc = Service(service_config(sink.endpoint, connections=connections))
    await svc.start()
    try:
        host, port = split(svc.addresses.http or "")
        conns = [await asyncio.open_connection(host, port) for _ in range(30)]
        guard = svc.guards["api"]
        await wait_until(lambda: guard.refused == 10)
        assert guard.open == 20
        async with asyncio.timeout(30):
            assert all(await asyncio.gather(*(closed_by_peer(r) for r, _ in conns[20:])))
            assert all(await asyncio.gather(*(closed_by_peer(r) for r, _ in conns[:20])))
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://{svc.addresses.http}/healthz") as reply,
        ):
            assert reply.status == 200
        for _, writer in conns:
            writer.close()
    finally:
        await svc.shutdown(grace_s=1.0)
