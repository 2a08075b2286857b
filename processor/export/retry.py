"""Retry link of the export chain: exponential backoff with jitter (exporterhelper style)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from processor.errors import DownstreamError
from processor.export.classify import SHUTDOWN_CODE, ExportFailed
from processor.export.config import RetryConfig

if TYPE_CHECKING:  # runtime import would be circular: the package re-exports this module
    from processor.export import Sender

_log = structlog.get_logger(__name__)

# sleep(delay_s, stop): wait delay_s seconds, returning early once ``stop`` is set.
Sleep = Callable[[float, asyncio.Event], Awaitable[None]]

# on_retry(attempt, delay_s, code): called each time a retry is scheduled.
RetryHook = Callable[[int, float, str], None]


async def event_sleep(delay: float, stop: asyncio.Event) -> None:
    """Sleep ``delay`` seconds, returning early as soon as ``stop`` is set."""
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        pass


# Backoff cap while shutdown drains the queue: frequent enough to use the last
# seconds, slow enough not to spin against a downstream that is still down.
HURRY_DELAY_S = 0.2


class RetrySender:
    """Sender that retries retryable DownstreamErrors of the wrapped sender with backoff.

    After :meth:`shutdown`, a pending backoff wakes up at once and its ``send`` raises
    ``ExportFailed(code=SHUTDOWN_CODE, retryable=False)``; new sends still get one attempt
    (so a final flush can go out) but are never retried. Like the Collector, the first
    attempt of a send is not interrupted: shutting the wrapped sender down cancels it.
    """

    def __init__(
        self,
        inner: Sender,
        policy: RetryConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = event_sleep,
        rng: random.Random | None = None,
        on_retry: RetryHook | None = None,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._on_retry = on_retry
        self._stopped = asyncio.Event()
        self._wake = asyncio.Event()  # set by shutdown() and hurry(): ends pending sleeps
        self._never = asyncio.Event()
        self._hurry = False

    async def send(self, payload: bytes) -> None:
        """Send ``payload``, retrying until success, a permanent error or the time budget."""
        start = self._clock()
        interval = self._policy.initial_interval
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._inner.send(payload)
                return
            except DownstreamError as err:
                await self._back_off(err, attempt=attempt, interval=interval, start=start)
            interval = min(interval * self._policy.multiplier, self._policy.max_interval)

    async def shutdown(self) -> None:
        """Stop retrying: interrupt pending backoffs and make their sends raise."""
        self._stopped.set()
        self._wake.set()

    def hurry(self) -> None:
        """Shutdown is draining: end pending backoffs now and retry at short intervals.

        A batch must not sleep through the drain deadline in a 30 s backoff when
        the downstream may be back.
        """
        self._hurry = True
        self._wake.set()

    async def _back_off(
        self, err: DownstreamError, *, attempt: int, interval: float, start: float
    ) -> None:
        """Wait before the next attempt, or re-raise ``err`` when it must not be retried."""
        if not (self._policy.enabled and err.retryable):
            raise err
        if self._stopped.is_set():
            raise _abandoned(err) from err
        delay = self._delay(interval, err)
        budget = self._policy.max_elapsed
        if budget > 0 and self._clock() - start + delay > budget:
            raise err
        if self._hurry:
            delay = min(delay, HURRY_DELAY_S)
        self._announce(attempt, delay, err.code)
        # Once hurried, sleeps are short and no longer wait on the (set) wake event.
        await self._sleep(delay, self._never if self._hurry else self._wake)
        if self._stopped.is_set():
            raise _abandoned(err) from err

    def _delay(self, interval: float, err: DownstreamError) -> float:
        """Jittered, capped backoff, floored by the server's RetryInfo delay if any."""
        spread = self._policy.jitter * (2.0 * self._rng.random() - 1.0)
        delay = min(interval * (1.0 + spread), self._policy.max_interval)
        floor = err.min_delay if isinstance(err, ExportFailed) else None
        # OTLP spec, "OTLP/gRPC Throttling": wait at least the server's RetryInfo delay.
        return delay if floor is None else max(delay, floor)

    def _announce(self, attempt: int, delay: float, code: str) -> None:
        """Log the scheduled retry and notify the metrics hook."""
        _log.info("export_retry_scheduled", attempt=attempt, delay_s=round(delay, 3), code=code)
        if self._on_retry is not None:
            self._on_retry(attempt, delay, code)


def _abandoned(err: DownstreamError) -> ExportFailed:
    """The error a send raises when shutdown interrupts its retries."""
    return ExportFailed(
        f"export abandoned at shutdown after: {err}", code=SHUTDOWN_CODE, retryable=False
    )
