"""Sharing sessions, request events and trace identities between replicas through Redis.

Each replica keeps the whole session table in memory, so the span path never
waits on the network. What one replica learns is applied locally at once and
sent to Redis by a background writer:

- as a key that expires by itself (``SET ... PX``), so a replica that starts or
  reconnects loads the current state with ``SCAN``;
- on a pub/sub channel, so running replicas apply it within milliseconds.

When Redis is unreachable the replica keeps serving from its own table, keeps
what it learns in a bounded outbox, reports the identity store as not ready,
and on reconnection flushes the outbox and reloads the state.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from processor.model import Session, SessionKind, User

log = structlog.get_logger("processor.identity.sessions.shared")

OUTBOX_LIMIT = 100_000  # changes kept while Redis is away; the oldest go first
SEEN_LIMIT = 500_000  # change ids remembered, so a reload does not apply one twice
_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_SCAN_BATCH = 1000

OnSession = Callable[[Session], None]
OnClose = Callable[[str, str, int], object]
OnTrace = Callable[[bytes, User], None]


def session_to_json(session: Session) -> dict[str, Any]:
    """A session as a JSON-ready dict."""
    data = asdict(session)
    data["user"]["roles"] = list(session.user.roles)
    return data


def user_from_json(user: dict[str, Any]) -> User:
    """A user from a shared record, every field coerced to text."""
    return User(
        id=str(user["id"]),
        email=str(user["email"]),
        name=str(user["name"]),
        roles=tuple(str(r) for r in user["roles"]),
        team=str(user.get("team", "")),
    )


def _change_id(raw: bytes | str) -> str:
    """A change's identity: a digest of its bytes (valid or not, parsed or not)."""
    data = raw.encode() if isinstance(raw, str) else raw
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def session_from_json(data: dict[str, Any]) -> Session:
    """The inverse of :func:`session_to_json`; KeyError/TypeError on a malformed record."""
    return Session(
        source_ip=str(data["source_ip"]),
        user=user_from_json(data["user"]),
        start_ns=int(data["start_ns"]),
        end_ns=int(data["end_ns"]),
        model=str(data["model"]),
        trace_id=str(data["trace_id"]),
        kind=_kind(data["kind"]),
    )


def _kind(text: object) -> SessionKind:
    if text == "request" or text == "call":
        return text
    return "session"


def safe_url(url: str) -> str:
    """The store URL without credentials, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or parts.path
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"


class RedisShare:
    """Mirrors local changes to Redis and applies other replicas' changes locally."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str,
        clock_ns: Callable[[], int],
        grace_ns: int,
        trace_ttl_ns: int,
        on_session: OnSession,
        on_close: OnClose,
        on_trace: OnTrace,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._channel = f"{prefix}changes"
        self._clock_ns = clock_ns
        self._grace_ns = grace_ns
        self._trace_ttl_ns = trace_ttl_ns
        self._on_session = on_session
        self._on_close = on_close
        self._on_trace = on_trace
        self._on_state = on_state
        self.replica = secrets.token_hex(6)
        self._seq = 0
        self._outbox: deque[tuple[str, str, int]] = deque(maxlen=OUTBOX_LIMIT)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: dict[str, None] = {}
        self.connected = False
        self.applied = 0  # changes from other replicas applied here

    # ------------------------------------------------------------------ publishing

    def session(self, session: Session) -> None:
        """Share a session or request event stored on this replica."""
        ttl = max(session.end_ns - self._clock_ns(), 0) + self._grace_ns
        self._send("s", {"session": session_to_json(session)}, ttl)

    def close(self, ip: str, user_key: str, at_ns: int) -> None:
        """Share a sign-out."""
        self._send("c", {"ip": ip, "user": user_key, "at": at_ns}, self._grace_ns)

    def trace(self, trace_id: bytes, user: User) -> None:
        """Share a trace identity learned on this replica."""
        body = {"trace": trace_id.hex(), "user": asdict(user)}
        self._send("t", body, self._trace_ttl_ns, key=f"{self._prefix}t:{trace_id.hex()}")

    def _send(self, kind: str, body: dict[str, Any], ttl_ns: int, key: str = "") -> None:
        self._seq += 1
        key = key or f"{self._prefix}{kind}:{self.replica}:{self._seq}"
        message = json.dumps(
            {"id": key, "r": self.replica, "k": kind, **body}, separators=(",", ":")
        )
        if len(self._outbox) == self._outbox.maxlen:
            log.warning("shared_outbox_full", hint="the oldest unsent change is dropped")
        self._outbox.append((key, message, max(ttl_ns // 1_000_000, 1)))
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the writer and the subscriber."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(self._write_loop), name="redis-writer"),
            loop.create_task(self._run(self._subscribe_loop), name="redis-subscriber"),
        ]

    async def shutdown(self) -> None:
        """Try to flush the outbox, then stop."""
        if self.connected and self._outbox:
            try:
                async with asyncio.timeout(2):
                    await self._flush()
            except (RedisError, OSError, TimeoutError):
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
        if self._outbox:
            log.warning("shared_changes_unsent", changes=len(self._outbox))

    async def _run(self, loop_body: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop_body`` forever, reconnecting with backoff on Redis errors."""
        failures = 0
        while True:
            try:
                await loop_body()
                failures = 0
            except (RedisError, OSError) as exc:
                delay = self._backoff(failures)
                failures += 1
                log.warning("redis_unavailable", error=type(exc).__name__, retry_in_s=delay)
                await asyncio.sleep(delay)
            except Exception:  # our bug: keep the replica alive and say so
                delay = self._backoff(failures)
                failures += 1
                log.exception("redis_sync_failed", retry_in_s=delay)
                await asyncio.sleep(delay)

    def _backoff(self, failures: int) -> float:
        self._set_connected(False)
        return _BACKOFF_S[min(failures, len(_BACKOFF_S) - 1)]

    async def _write_loop(self) -> None:
        await self._client.ping()
        while True:
            await self._flush()
            self._wake.clear()
            if not self._outbox:
                await self._wake.wait()

    async def _flush(self) -> None:
        while self._outbox:
            batch = [self._outbox[i] for i in range(min(len(self._outbox), 500))]
            async with self._client.pipeline(transaction=False) as pipe:
                for key, message, ttl_ms in batch:
                    pipe.set(key, message, px=ttl_ms)
                    pipe.publish(self._channel, message)
                await pipe.execute()
            for _ in batch:
                self._outbox.popleft()

    async def _subscribe_loop(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            loaded = await self._load_state()
            self._set_connected(True)
            log.info("redis_synced", loaded=loaded, replica=self.replica)
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self._apply(message["data"])
        finally:
            # redis-py typed `aclose` only in 8.x; the cast keeps both typings clean.
            close = cast(Callable[[], Awaitable[None]], pubsub.aclose)
            await close()

    async def _load_state(self) -> int:
        """Apply every shared change still in Redis (after subscribing, so none is missed)."""
        loaded = 0
        for kind in ("s", "c", "t"):
            pattern = f"{self._prefix}{kind}:*"
            async for key in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
                try:
                    value = await self._client.get(key)
                except ResponseError:  # not a string: not ours, whatever its name
                    continue
                if value is not None and self._apply(value):
                    loaded += 1
        return loaded

    def _apply(self, raw: bytes | str) -> bool:
        """Apply one change from another replica; False for ours or a malformed one."""
        if not self._first_time(_change_id(raw)):
            return False
        try:
            data = json.loads(raw)
            if data["r"] == self.replica:
                return False
            kind = data["k"]
            if kind == "s":
                self._on_session(session_from_json(data["session"]))
            elif kind == "c":
                self._on_close(str(data["ip"]), str(data["user"]), int(data["at"]))
            elif kind == "t":
                user = data["user"]
                self._on_trace(
                    bytes.fromhex(data["trace"]),
                    User(
                        user["id"],
                        user["email"],
                        user["name"],
                        tuple(user["roles"]),
                        user.get("team", ""),
                    ),
                )
            else:
                return False
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("shared_change_malformed", error=str(exc))
            return False
        self.applied += 1
        return True

    def _first_time(self, change_id: str) -> bool:
        """True the first time a change id is seen (bounded memory of ids)."""
        if change_id in self._seen:
            return False
        self._seen[change_id] = None
        if len(self._seen) > SEEN_LIMIT:
            del self._seen[next(iter(self._seen))]
        return True

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            if self._on_state is not None:
                self._on_state(connected)
