"""A real redis-server on 127.0.0.1 for the shared-store tests (skipped when absent)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from conftest import free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """One redis-server process; can be stopped and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        if REDIS_SERVER is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is missing: .ci/run should have installed it")
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        self.port = free_port()
        self._dir = directory
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>/0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        assert REDIS_SERVER is not None
        self._proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # poll until it answers; nothing else signals it
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                if self._proc.poll() is not None:
                    raise RuntimeError("redis-server exited") from None
                time.sleep(0.02)
        raise TimeoutError("redis-server did not answer")

    def stop(self) -> None:
        """Stop the server (its data is gone: it runs without persistence)."""
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None
