"""Listener security: TLS material for both servers, the receiver's bearer token, rate limits.

Everything here is built once at start-up from validated config; nothing reads a
clock it was not given.
"""

from __future__ import annotations

import hmac
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from processor.config.tls import TlsConfig
from processor.receive.config import RateLimitConfig, ReceiverAuthConfig

__all__ = [
    "MAX_CLIENTS",
    "BearerToken",
    "Metadata",
    "RateLimiter",
    "grpc_server_credentials",
    "http_ssl_context",
    "rate_limiter",
    "receiver_auth",
]

# A bucket costs a few hundred bytes, so 10k clients stay around a few MB while
# far exceeding the number of distinct callers (Open WebUI instances) we expect.
MAX_CLIENTS = 10_000

Metadata = Sequence[tuple[str, str | bytes]]
"""gRPC invocation metadata: ``(key, value)`` pairs, values bytes for ``-bin`` keys."""


# --------------------------------------------------------------------------- TLS


def _cert_and_key(tls: TlsConfig) -> tuple[str, str]:
    """The certificate and key paths; ValueError when TLS is not configured."""
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("TLS is not configured: cert_file and key_file are unset")
    return tls.cert_file, tls.key_file


def grpc_server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Server credentials for ``add_secure_port``; client certificates required with a CA."""
    cert, key = _cert_and_key(tls)
    ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(Path(key).read_bytes(), Path(cert).read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def http_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A TLS >= 1.2 server context; with ``client_ca_file``, clients must present a cert."""
    cert, key = _cert_and_key(tls)
    # Not ssl.create_default_context(Purpose.CLIENT_AUTH): it also trusts the system
    # CAs for client certificates, so any publicly issued certificate would pass mTLS.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if tls.client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=tls.client_ca_file)
    return context


# --------------------------------------------------------------------------- receiver token


class BearerToken:
    """The one bearer-token check of every listener: ``Authorization: Bearer <token>``
    on the session API, the webhooks' telemetry and OTLP/HTTP, ``authorization``
    metadata on gRPC. The token is compared in constant time and never shown."""

    __slots__ = ("_expected",)

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    def __repr__(self) -> str:
        return "BearerToken(<redacted>)"

    def allows(self, authorization: str | None) -> bool:
        """True when one ``Authorization`` value carries the configured bearer token."""
        scheme, _, presented = (authorization or "").strip().partition(" ")
        # RFC 7235 section 2.1: the scheme name is case-insensitive.
        if scheme.lower() != "bearer":
            return False
        # Header values may hold undecodable bytes (aiohttp keeps them as
        # surrogates); encode them back rather than fail.
        candidate = presented.strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(candidate, self._expected)

    def allows_metadata(self, metadata: Metadata | None) -> bool:
        """True when ``metadata`` (gRPC metadata or HTTP header pairs) holds exactly one
        authorization entry, and it carries the token."""
        values = [value for key, value in metadata or () if key.lower() == "authorization"]
        # Two entries are never sent by a well-behaved exporter; refuse rather than
        # guess which one a proxy in front of us would have honoured.
        if len(values) != 1:
            return False
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "surrogateescape")
        return self.allows(value)


def receiver_auth(config: ReceiverAuthConfig) -> BearerToken | None:
    """The check ``receiver.auth`` asks for, or None when no token is configured."""
    if config.token is None:
        return None
    return BearerToken(config.token.get_secret_value())


# --------------------------------------------------------------------------- rate limiting


@dataclass(slots=True)
class _Bucket:
    """Tokens left for one client, as of ``updated`` (clock seconds)."""

    tokens: float
    updated: float


class RateLimiter:
    """A token bucket per key (client IP): ``burst`` at once, refilled at ``rate`` per second.

    At most ``max_keys`` buckets are kept; beyond that the least recently seen key
    is forgotten and starts again with a full bucket. The bound costs accuracy
    against a caller with very many addresses, never memory.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_CLIENTS,
    ) -> None:
        if not rate > 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst and max_keys >= 1")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        """Number of keys currently tracked."""
        return len(self._buckets)

    def allow(self, key: str) -> float | None:
        """None when ``key`` may proceed (spending a token), else seconds until it may."""
        bucket = self._bucket(key, self._clock())
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self._rate

    def _bucket(self, key: str, now: float) -> _Bucket:
        """``key``'s bucket refilled up to ``now``, marked most recently used."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self._add(key, now)
        self._buckets.move_to_end(key)
        elapsed = max(0.0, now - bucket.updated)  # a clock going back never adds tokens
        bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
        bucket.updated = max(bucket.updated, now)
        return bucket

    def _add(self, key: str, now: float) -> _Bucket:
        """A full bucket for a new key, evicting the least recently used beyond the bound."""
        bucket = self._buckets[key] = _Bucket(self._burst, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return bucket


def rate_limiter(
    config: RateLimitConfig, clock: Callable[[], float] = time.monotonic
) -> RateLimiter | None:
    """The limiter ``api.rate_limit`` asks for, or None when ``requests_per_second`` is 0."""
    if not config.enabled:
        return None
    return RateLimiter(config.requests_per_second, config.burst, clock=clock)
