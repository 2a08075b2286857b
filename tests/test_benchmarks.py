"""The benchmarks run (their figures are printed, never asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_attribution_benchmark_runs() -> None:
    """The attribution benchmark prints its table for a small load."""
    result = run_module("benchmarks.attribution", "--loads", "1,5")
    assert result.returncode in (0, 1), result.stderr
    assert "precision" in result.stdout and "webhook+traces" in result.stdout


def test_enrich_benchmark_runs() -> None:
    """The span-path benchmark prints its table."""
    result = run_module("benchmarks.enrich", "--seconds", "0.2")
    assert result.returncode == 0, result.stderr
    assert "pass-through" in result.stdout


def test_floor_benchmark_runs() -> None:
    """The floor benchmark checks its enrich step names every user, then prints the
    ceiling the given proxy rate implies."""
    result = run_module("benchmarks.floor", "--seconds", "0.2", "--proxy-spans-per-s", "300000")
    assert result.returncode == 0, result.stderr
    assert "service floor" in result.stdout
    assert result.stdout.count("ceiling with the") == 2


def test_compress_benchmark_runs() -> None:
    """The gzip cost table prints a row per compressor."""
    result = run_module("benchmarks.compress", "--rounds", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("| zlib level") == 2 and "ISA-L level 1" in result.stdout


def test_redis_share_benchmark_runs() -> None:
    """The Redis sharing benchmark prints its figures (needs redis-server)."""
    import shutil

    import pytest

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    result = run_module("benchmarks.redis_share", "--events", "50")
    assert result.returncode == 0, result.stderr
    assert "propagation" in result.stdout and "round trip" in result.stdout


def test_dense_attribution_benchmark_runs() -> None:
    """The dense attribution benchmark prints precision, recall and the timing bound."""
    result = run_module("benchmarks.attribution_dense", "--minutes", "1")
    assert result.returncode in (0, 1), result.stderr
    assert "recall/bound" in result.stdout and "request 5-80ms" in result.stdout


_SHAPES_CHECK = """
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from benchmarks.bench_sink import find_sequences
from benchmarks.loadgen import Rotation

def spans(raw):
    request = ExportTraceServiceRequest.FromString(raw)
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]

def attr(span, key):
    return next(kv.value.string_value for kv in span.attributes if kv.key == key)

rotation = Rotation("diverse", 512, 1, 10**18)
first, second = spans(rotation.payload(7)), spans(rotation.payload(8))
sources = [attr(s, "src.addr") for s in first + second]
named = spans(Rotation("identity", 64, 1, 10**18).payload(1))
narrow = {attr(s, "src.addr") for s in spans(Rotation("narrow", 512, 1, 10**18).payload(1))}
print(len(set(sources)), len({s.rpartition(":")[0] for s in sources}),
      {s.trace_id for s in first}.isdisjoint(s.trace_id for s in second),
      find_sequences(rotation.payload(7)),
      all(attr(s, "x-openwebui-user-email").endswith("@example.com") for s in named),
      len(narrow))
"""


def test_load_shapes_are_what_their_names_say() -> None:
    """diverse: every span its own ip:port over 2,048 addresses; identity: the same with
    Open WebUI's headers; every request its own trace ids, its sequence number found."""
    result = run_module("benchmarks.loadgen", "--help")  # importable from the root
    assert result.returncode == 0, result.stderr
    done = subprocess.run(
        [sys.executable, "-c", _SHAPES_CHECK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1024", "1024", "True", "[7]", "True", "28"]
