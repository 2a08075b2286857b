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
