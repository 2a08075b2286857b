"""The command line: check-config, demo, and serve as a real process with SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from processor.cli import main

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = Path(__file__).parent / "testdata" / "config"


def test_check_config_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    """The documented example config passes check-config."""
    assert main(["check-config", str(ROOT / "deploy/examples/config.yaml")]) == 0
    assert capsys.readouterr().out.strip().endswith(": ok")


def test_check_config_lists_every_problem(capsys: pytest.CaptureFixture[str]) -> None:
    """An invalid file exits non-zero and prints each problem with its dotted path."""
    assert main(["check-config", str(TESTDATA / "many_errors.yaml")]) == 1
    err = capsys.readouterr().err
    lines = [line.strip() for line in err.splitlines()[1:]]
    assert len(lines) >= 4
    assert all(": " in line and not line.startswith(":") for line in lines)


def test_check_config_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file is reported, not raised."""
    assert main(["check-config", "/nonexistent/config.yaml"]) == 1
    assert "nonexistent" in capsys.readouterr().err


def test_demo_runs_and_shows_every_link(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo exits 0; its table shows session, trace and directory attribution."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if "/chat/completions" in line]
    assert len(rows) == 12
    by_user = {(row[5], row[6], row[7]) for row in rows}
    assert ("mike.chen@example.com", "session", "high") in by_user
    assert ("ana.lima@example.com", "trace", "exact") in by_user
    assert ("ci-bot@example.com", "directory", "exact") in by_user
    assert ("-", "session", "ambiguous") in by_user
    assert "Run the real thing" in out


def test_serve_starts_and_stops_on_sigterm(tmp_path: Path) -> None:
    """``serve`` logs where it listens, and exits 0 after a clean shutdown on SIGTERM."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "receiver: {grpc_endpoint: '127.0.0.1:0', http_endpoint: '127.0.0.1:0'}\n"
        "exporter: {endpoint: '127.0.0.1:9', insecure: true}\n"
        "api: {endpoint: '127.0.0.1:0', token: 'serve-test-token'}\n"
        "logging: {format: json}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    started = json.loads(proc.stderr.readline())
    assert started["event"] == "service_started"
    assert started["grpc"].startswith("127.0.0.1:")
    proc.send_signal(signal.SIGTERM)
    rest = proc.stderr.read()
    assert proc.wait(timeout=30) == 0
    events = [json.loads(line)["event"] for line in rest.splitlines() if line.startswith("{")]
    assert events[-1] == "service_stopped"
    assert "serve-test-token" not in rest


def test_serve_refuses_bad_config(tmp_path: Path) -> None:
    """``serve`` with an invalid config exits 2 and names the problem."""
    config = tmp_path / "config.yaml"
    config.write_text("exporter: {endpoint: 'jaeger:4317'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "processor", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 2
    assert "api.token" in result.stderr


@pytest.mark.parametrize("listener", ["grpc_endpoint", "http_endpoint", "api", "telemetry"])
def test_serve_reports_a_busy_port_in_one_line(tmp_path: Path, listener: str) -> None:
    """A port already taken exits 1 with a ``startup_failed`` line naming it, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        endpoints = {
            "grpc_endpoint": "127.0.0.1:0",
            "http_endpoint": "127.0.0.1:0",
            "api": "127.0.0.1:0",
            "telemetry": "127.0.0.1:0",
        }
        endpoints[listener] = busy
        config = tmp_path / "config.yaml"
        config.write_text(
            f"receiver: {{grpc_endpoint: '{endpoints['grpc_endpoint']}', "
            f"http_endpoint: '{endpoints['http_endpoint']}'}}\n"
            "exporter: {endpoint: '127.0.0.1:9', insecure: true}\n"
            f"api: {{endpoint: '{endpoints['api']}', token: 'serve-test-token'}}\n"
            f"telemetry: {{endpoint: '{endpoints['telemetry']}'}}\n"
            "logging: {format: json}\n"
        )
        result = subprocess.run(
            [sys.executable, "-m", "processor", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "startup_failed"]
    assert len(failed) == 1
    assert busy.rsplit(":", 1)[1] in failed[0]["error"]
