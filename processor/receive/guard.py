"""Connection hygiene for every HTTP listener: a cap, and deadlines a slow sender cannot stretch.

aiohttp keeps a connection open as long as its peer sends a byte now and then: a
sender trickling its headers or body one byte at a time holds a socket, a file
descriptor and a handler task for ever, and 800 of them are as cheap to open as
one. Each listener therefore gets a :class:`ConnectionGuard`:

- at most ``max_connections`` open connections; one more is closed at once
  (its peer sees the connection reset and retries later);
- a connection must deliver a request's headers within ``header_timeout`` of
  opening (and, on a kept-alive connection, within ``idle_timeout`` plus
  ``header_timeout`` after the previous answer), else it is closed;
- a request's body must be read and handled within ``body_timeout``, else the
  answer is 408 and the connection closes.

aiohttp's own ``keepalive_timeout`` (set to ``idle_timeout``) closes connections
idle between requests. The guard wraps the listener's protocol factory, so it sees
connections before aiohttp does; see :class:`GuardedSite`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_runner import BaseSite

from processor import status

log = structlog.get_logger("processor.receive.guard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionGuard:
    """Counts a listener's connections and enforces the deadlines above."""

    def __init__(
        self,
        *,
        max_connections: int,
        header_timeout_s: float,
        body_timeout_s: float,
        idle_timeout_s: float,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.open = 0
        self.refused = 0
        self.timed_out = 0
        self._timers: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory guarding the protocols ``inner`` makes."""
        return lambda: _Guarded(inner(), self)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Stop the header deadline, bound the body and handling, re-arm for keep-alive."""
        transport = request.transport
        if transport is not None:
            self._disarm(transport)
        try:
            async with asyncio.timeout(self.body_timeout_s):
                return await handler(request)
        except TimeoutError:
            self.timed_out += 1
            return web.Response(
                status=status.TIMEOUT.http,
                text="request not received and handled in time\n",
                headers=_CLOSE,
            )
        finally:
            if transport is not None and not transport.is_closing():
                self._arm(transport, self.idle_timeout_s + self.header_timeout_s)

    def _opened(self, transport: asyncio.BaseTransport) -> bool:
        if self.open >= self.max_connections:
            self.refused += 1
            _abort(transport)
            return False
        self.open += 1
        self._arm(transport, self.header_timeout_s)
        return True

    def _closed(self, transport: asyncio.BaseTransport) -> None:
        self.open -= 1
        self._disarm(transport)

    def _arm(self, transport: asyncio.BaseTransport, delay_s: float) -> None:
        self._disarm(transport)
        loop = asyncio.get_running_loop()
        self._timers[transport] = loop.call_later(delay_s, self._expire, transport)

    def _disarm(self, transport: asyncio.BaseTransport) -> None:
        timer = self._timers.pop(transport, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        self._timers.pop(transport, None)
        if not transport.is_closing():
            self.timed_out += 1
            _abort(transport)


_CLOSE = {"Connection": "close"}


def _abort(transport: asyncio.BaseTransport) -> None:
    """Close at once, unsent data dropped (a TCP transport can; others just close)."""
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


class _Guarded(asyncio.Protocol):
    """Forwards every protocol event to aiohttp's handler, once the guard admits it."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._admitted = self._guard._opened(transport)
        if self._admitted:
            self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self._guard._closed(self._transport)
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections pass through ``guard`` first."""

    def __init__(self, runner: web.BaseRunner, *args: Any, guard: ConnectionGuard, **kw: Any):
        super().__init__(runner, *args, **kw)
        self._guard = guard

    async def start(self) -> None:
        """Listen, as TCPSite does, with the guarded protocol factory."""
        await BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
