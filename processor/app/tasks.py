"""The service's timers: periodic work that must keep running whatever one round does."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

log = structlog.get_logger("processor.service")


def every(
    interval_s: float, work: Callable[[], object], *, name: str, failure: str
) -> asyncio.Task[None]:
    """Run ``work`` every ``interval_s`` until cancelled; a failed round is logged as
    ``failure`` and the next one runs (a dead timer would strand held spans
    or grow the session table)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                work()
            except Exception:
                log.exception(failure)

    return asyncio.create_task(loop(), name=name)


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Stop a background task; its own failure must not abort a shutdown."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
