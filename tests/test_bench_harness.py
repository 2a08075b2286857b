"""The end-to-end benchmark runs (its figures are printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_harness_quick_run_prints_its_tables() -> None:
    """``python -m benchmarks.harness --quick`` starts every process and prints the tables."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.harness", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for header in (
        "| target | spans/s | vs pass-through |",
        "| path | request p50 / p99 ms |",
        "| sessions | spans/s |",
        "| spans per request | pass-through spans/s |",
        "Targets:",
    ):
        assert header in result.stdout, result.stdout
