"""Shared fixtures: a real service on 127.0.0.1 exporting into a real in-process sink."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from processor.app.config import Config, parse_config
from processor.app.service import Service
from processor.tools.sink import TraceSink

TOKEN = "test-token-0123456789"


class Clock:
    """An injectable clock the test moves by hand (Unix nanoseconds)."""

    def __init__(self, now_ns: int = 1_795_000_000_000_000_000) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def service_config(
    sink_endpoint: str, *, queue: dict[str, Any] | None = None, **overrides: Any
) -> Config:
    """Config on ephemeral loopback ports; ``overrides`` replace top-level sections,
    ``queue`` updates exporter.queue."""
    data: dict[str, Any] = {
        "receiver": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"},
        "exporter": {
            "endpoint": sink_endpoint,
            "insecure": True,
            "retry": {"initial_interval": "10ms", "max_interval": "50ms", "max_elapsed": "2s"},
            "queue": {"drain_timeout": "5s", "retry_after": "200ms"},
        },
        "api": {"endpoint": "127.0.0.1:0", "token": TOKEN, "max_body_bytes": "4KiB"},
        # No holding unless a test asks: held spans wait on the injected clock.
        "correlation": {"hold": 0},
        "logging": {"level": "warning"},
    }
    data["exporter"]["queue"].update(queue or {})
    data.update(overrides)
    return parse_config(data, base_dir=Path.cwd(), env={})


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` on the event loop until it holds; TimeoutError after ``timeout_s``.

    For conditions no event signals (a metric reaching a value); the poll
    interval is short and the result does not depend on it.
    """
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - nothing signals a metric change
            await asyncio.sleep(0.01)


async def push_sessions(service: Service, payload: dict[str, Any]) -> None:
    """POST one session, or ``{"sessions": [...]}``, to the service's API; expect 200."""
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{service.addresses.http}/v1/sessions",
            json=payload,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as reply,
    ):
        assert reply.status == 200, await reply.text()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Undo any logging set-up a test (say, the CLI) made."""
    yield
    structlog.reset_defaults()


@pytest.fixture
async def sink() -> AsyncIterator[TraceSink]:
    """A running OTLP/gRPC sink standing in for Jaeger."""
    s = TraceSink()
    await s.start()
    yield s
    await s.stop()


@pytest.fixture
def clock() -> Clock:
    """The service's clock, under the test's control."""
    return Clock()


@pytest.fixture
async def service(sink: TraceSink, clock: Clock) -> AsyncIterator[Service]:
    """A started service exporting to ``sink``, with a 4 KiB session body limit."""
    svc = Service(service_config(sink.endpoint), clock_ns=clock)
    await svc.start()
    yield svc
    await svc.shutdown(grace_s=1.0)
