"""The receivers' config: OTLP listeners, bearer token, rate limits, connections, telemetry."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    model_validator,
)

from processor.config.base import Frozen, field_problems
from processor.config.scalars import (
    ConfigPath,
    Duration,
    FiniteFloat,
    GiB,
    KiB,
    ListenEndpoint,
    MiB,
    OptionalListenEndpoint,
    PositiveInt,
    size_between,
    split_endpoint,
    to_size,
)
from processor.config.secrets import SecretRule, secret_resolver
from processor.config.tls import TlsConfig

RECEIVER_TOKEN_ENV_VAR = "USER_ENRICHER_RECEIVER_TOKEN"
"""Environment variable that overrides ``receiver.auth.token`` and ``token_file``."""


_RECEIVER_TOKEN = SecretRule("token", "token_file", RECEIVER_TOKEN_ENV_VAR, 16, "")


class ReceiverAuthConfig(Frozen):
    """An optional bearer token OTLP senders must present on Export calls.

    Off unless a token comes from ``USER_ENRICHER_RECEIVER_TOKEN``, ``token_file``
    or ``token`` (that order); it must be at least 16 characters.
    """

    token: SecretStr | None = None
    token_file: ConfigPath | None = None

    @property
    def enabled(self) -> bool:
        """True when Export calls must carry the token."""
        return self.token is not None

    # From the environment variable, the file or the inline value, checked.
    _secret = secret_resolver(_RECEIVER_TOKEN, lambda _: False)


class RateLimitConfig(Frozen):
    """Token bucket per client IP on POST /v1/sessions and the webhook route."""

    # Sustained requests per second per client; 0 disables the limit.
    requests_per_second: Annotated[FiniteFloat, Field(ge=0)] = 200.0
    # Requests a client may send at once before the sustained rate applies.
    burst: PositiveInt = 400

    @property
    def enabled(self) -> bool:
        """True when requests are limited."""
        return self.requests_per_second > 0


class ReceiverConfig(Frozen):
    """The OTLP receivers AgentGateway exports spans to: gRPC and, unless disabled, HTTP.

    Both share ``max_message_bytes``, ``tls`` and ``auth``.
    """

    grpc_endpoint: ListenEndpoint = "127.0.0.1:4317"
    # OTLP/HTTP (POST /v1/traces, protobuf or JSON); empty disables it.
    http_endpoint: OptionalListenEndpoint = "127.0.0.1:4318"
    max_message_bytes: Annotated[int, BeforeValidator(to_size), size_between(KiB, GiB)] = 64 * MiB
    # Bytes all requests being read, decompressed and decoded may hold together;
    # past it new requests are told to retry (429 / RESOURCE_EXHAUSTED). Unset: a
    # quarter of exporter.queue.max_bytes, and at least max_message_bytes.
    max_inflight_bytes: (
        Annotated[int, BeforeValidator(to_size), size_between(MiB, 64 * GiB)] | None
    ) = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    # Validated even when absent, so the environment variable alone enables it.
    auth: ReceiverAuthConfig = Field(default_factory=ReceiverAuthConfig, validate_default=True)

    @property
    def http_enabled(self) -> bool:
        """True when the OTLP/HTTP receiver listens."""
        return bool(self.http_endpoint)

    @model_validator(mode="after")
    def _distinct_ports(self) -> Self:
        """The two receivers cannot share one fixed port."""
        if self.http_endpoint and _same_fixed_address(self.http_endpoint, self.grpc_endpoint):
            raise field_problems(
                type(self).__name__, [("http_endpoint", "must differ from grpc_endpoint")]
            )
        return self


def _same_fixed_address(a: str, b: str) -> bool:
    """True when two listen endpoints name the same host and the same non-zero port."""
    host_a, port_a = split_endpoint(a)
    host_b, port_b = split_endpoint(b)
    return port_a != 0 and (host_a, port_a) == (host_b, port_b)


METRICS_TOKEN_ENV_VAR = "USER_ENRICHER_METRICS_TOKEN"
"""Environment variable that sets (and overrides) ``telemetry.token``."""

_METRICS_TOKEN = SecretRule("token", "token_file", METRICS_TOKEN_ENV_VAR, 16, "")


class TelemetryConfig(Frozen):
    """Where health and /metrics are served, and who may read /metrics.

    ``endpoint`` empty (the default): on the API port, as before. Set, e.g.
    ``0.0.0.0:9464``: on a listener of their own, and the API port serves no
    /metrics, so Prometheus and Open WebUI need different ports opened. A token
    (at least 16 characters; ``USER_ENRICHER_METRICS_TOKEN``, ``token_file`` or
    ``token``) makes /metrics answer 401 without ``Authorization: Bearer``;
    health stays open for probes.
    """

    endpoint: OptionalListenEndpoint = ""
    token: SecretStr | None = None
    token_file: ConfigPath | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)

    # From the environment variable, the file or the inline value, checked.
    _secret = secret_resolver(_METRICS_TOKEN, lambda _: False)


class ConnectionsConfig(Frozen):
    """Limits on connections: every HTTP listener (OTLP/HTTP, session API and webhooks,
    telemetry) and the gRPC port, so slow or numerous senders cannot hold them."""

    # Open connections per HTTP listener; one more is closed at once.
    max_http_connections: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 1024
    # A request's headers must arrive within this of the connection opening.
    header_timeout: Annotated[Duration, Field(gt=0, le=3600)] = 10.0
    # A request's body must be read and the request handled within this (else 408).
    body_timeout: Annotated[Duration, Field(gt=0, le=3600)] = 60.0
    # A connection idle between requests is closed after this (HTTP keep-alive, and
    # gRPC connections without calls).
    idle_timeout: Annotated[Duration, Field(gt=0, le=86_400)] = 75.0
    # gRPC: calls in flight on the whole port (past it RESOURCE_EXHAUSTED before
    # the message is read), and streams per connection.
    grpc_max_concurrent_rpcs: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 256
    grpc_max_concurrent_streams: Annotated[int, Field(strict=True, ge=1, le=10_000)] = 100
