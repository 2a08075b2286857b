"""Fault tests against the real service process: kill -9 with a spool, SIGTERM under load."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from conftest import free_port, wait_until
from fault_kit import Ledger, batch, span_numbers
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from processor.tools.sink import TraceSink


def write_config(tmp_path: Path, exporter_port: int, spool: Path | None) -> Path:
    """A config for a service process on ephemeral ports; fast retries."""
    queue: dict[str, Any] = {"drain_timeout": "5s", "retry_after": "200ms"}
    if spool is not None:
        queue["directory"] = str(spool)
    config = {
        "receiver": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"},
        "exporter": {
            "endpoint": f"127.0.0.1:{exporter_port}",
            "insecure": True,
            "retry": {"initial_interval": "20ms", "max_interval": "100ms", "max_elapsed": "2s"},
            "queue": queue,
        },
        "api": {"enabled": False},
        "correlation": {"hold": "200ms"},
        "logging": {"format": "json", "level": "info"},
    }
    path = tmp_path / "config.json.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class ServiceProcess:
    """``user-enricher serve`` as a child process; its JSON log lines are collected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.other: list[str] = []  # lines that are not log events (a traceback)
        self.grpc = ""

    async def started(self) -> None:
        """Read log lines until the service says where it listens."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(30):
            while not self.grpc:
                line = await self.proc.stderr.readline()
                assert line, "the service exited before starting"
                self._keep(line)
                if self.events and self.events[-1].get("event") == "service_started":
                    self.grpc = self.events[-1]["grpc"]

    async def wait(self) -> int:
        """Wait for exit and collect the remaining log lines; returns the exit code."""
        assert self.proc.stderr is not None
        async with asyncio.timeout(60):
            for line in (await self.proc.stderr.read()).splitlines():
                self._keep(line)
            return await self.proc.wait()

    def event(self, name: str) -> dict[str, Any]:
        """The last log event called ``name``."""
        return next(e for e in reversed(self.events) if e.get("event") == name)

    def _keep(self, line: bytes) -> None:
        if line.startswith(b"{"):
            self.events.append(json.loads(line))
        else:
            self.other.append(line.decode(errors="replace"))


@asynccontextmanager
async def service_process(config: Path) -> AsyncIterator[ServiceProcess]:
    """Start the service; kill it on the way out if it is still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "processor",
        "serve",
        "--config",
        str(config),
        stderr=asyncio.subprocess.PIPE,
    )
    service = ServiceProcess(proc)
    try:
        await service.started()
        yield service
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_kill_9_with_spool_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Every span acknowledged before a kill -9 arrives after a restart on the same spool."""
    port = free_port()
    config = write_config(tmp_path, port, spool=tmp_path / "spool")
    ledger = Ledger()
    async with service_process(config) as first:
        async with grpc.aio.insecure_channel(first.grpc) as channel:
            for i in range(30):
                await ledger.send(channel, i * 40, 40)
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
    spooled = len(list((tmp_path / "spool").glob("*.req")))
    sink = TraceSink()
    await sink.start(port)
    try:
        async with service_process(config) as second:
            await wait_until(lambda: set(ledger.acked) <= set(span_numbers(sink.span_ids())))
            replayed = second.event("service_started")["replayed_requests"]
    finally:
        await sink.stop()
    delivered = set(span_numbers(sink.span_ids()))
    report = (
        f"sent=1200 acknowledged={len(ledger.acked)} spooled_requests={spooled} "
        f"replayed={replayed} delivered={len(delivered)} "
        f"duplicates={len(sink.span_ids()) - len(delivered)} "
        f"lost={len(set(ledger.acked) - delivered)}"
    )
    print(f"kill -9 with spool: {report}")
    assert len(ledger.acked) == 1200 and spooled == replayed == 30, report
    assert delivered == set(range(1200)), report


async def test_sigterm_under_load_drains_and_accounts(tmp_path: Path) -> None:
    """SIGTERM mid-stream: the service stops accepting, delivers what it took, says so."""
    sink = TraceSink()
    await sink.start()
    port = int(sink.endpoint.rsplit(":", 1)[1])
    ledger = Ledger()
    try:
        async with service_process(write_config(tmp_path, port, spool=None)) as svc:
            async with grpc.aio.insecure_channel(svc.grpc) as channel:
                for i in range(200):
                    if i == 100:
                        svc.proc.send_signal(signal.SIGTERM)
                    if await ledger.send(channel, i * 20, 20, deadline_s=5) != grpc.StatusCode.OK:
                        break
                code = await svc.wait()
            stopped = svc.event("service_stopped")
        await wait_until(lambda: set(ledger.acked) <= set(span_numbers(sink.span_ids())), 10)
    finally:
        await sink.stop()
    delivered = set(span_numbers(sink.span_ids()))
    report = (
        f"acknowledged={len(ledger.acked)} delivered={len(delivered)} "
        f"lost_reported={stopped['spans_lost']} refused={ledger.refused}"
    )
    print(f"SIGTERM under load: {report}")
    assert code == 0, report
    assert set(ledger.acked) <= delivered, report
    assert stopped["spans_lost"] == 0, report


def huge_json_request(spans: int) -> bytes:
    """An OTLP/JSON Export request of ``spans`` spans (tens of MB, seconds to decode)."""
    request = ExportTraceServiceRequest.FromString(batch(1_000_000, spans))
    data = json_format.MessageToDict(request)
    for span in data["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        span["traceId"] = base64.b64decode(span["traceId"]).hex()
        span["spanId"] = base64.b64decode(span["spanId"]).hex()
    return json.dumps(data).encode()


async def test_sigterm_during_the_slowest_request_still_exits(tmp_path: Path) -> None:
    """SIGTERM while a ~60 MB OTLP/JSON body is being decoded in a worker thread: the
    process exits (the worker abandoned, not joined), and every span acknowledged before
    is delivered or spooled."""
    sink = TraceSink()
    await sink.start()
    port = int(sink.endpoint.rsplit(":", 1)[1])
    ledger = Ledger()
    body = huge_json_request(260_000)
    config = write_config(tmp_path, port, spool=tmp_path / "spool")
    try:
        async with service_process(config) as svc:
            async with grpc.aio.insecure_channel(svc.grpc) as channel:
                for i in range(10):
                    await ledger.send(channel, i * 20, 20)
            host, http_port = svc.event("service_started")["otlp_http"].rsplit(":", 1)
            _, writer = await asyncio.open_connection(host, int(http_port))
            writer.write(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            writer.write(body)
            await writer.drain()  # the body is with the service: it is decoding now
            signalled = time.monotonic()
            svc.proc.send_signal(signal.SIGTERM)
            code = await svc.wait()
            took = time.monotonic() - signalled
            stopped = svc.event("service_stopped")
            writer.close()
        await wait_until(lambda: set(ledger.acked) <= set(span_numbers(sink.span_ids())), 10)
    finally:
        await sink.stop()
    abandoned = any(e.get("event") == "exit_abandoning_workers" for e in svc.events)
    print(
        f"SIGTERM during a {len(body) / 1e6:.0f} MB JSON decode: exited in {took:.1f}s "
        f"(code {code}, worker abandoned: {abandoned}, spans_lost={stopped['spans_lost']})"
    )
    assert code == 0, "".join(svc.other[-12:])
    assert stopped["spans_lost"] == 0
