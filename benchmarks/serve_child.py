"""``user-enricher serve`` as a child process for the asyncio benchmarks (not a test)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any


@contextlib.asynccontextmanager
async def serve_child(
    config: dict[str, Any],
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, Any]]]:
    """Run the service on ``config`` (logging JSON at info, so it says where it listens);
    yields the process and its ``service_started`` event. Later log lines are read and
    dropped, so the pipe never fills; the process is terminated on the way out."""
    config = {**config, "logging": {"format": "json", "level": "info"}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "processor",
            "serve",
            "--config",
            str(path),
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        drain: asyncio.Task[None] | None = None
        try:
            started = await _started(proc.stderr)
            drain = asyncio.create_task(_discard(proc.stderr))
            yield proc, started
        finally:
            if drain is not None:
                drain.cancel()
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()


async def _started(stream: asyncio.StreamReader) -> dict[str, Any]:
    while True:
        line = await stream.readline()
        if not line:
            raise SystemExit("the service exited before it started")
        if line.startswith(b"{"):
            event: dict[str, Any] = json.loads(line)
            if event.get("event") == "service_started":
                return event


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
