"""The exporter's config: the downstream, its retries and the queue in front of it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    model_validator,
)

from processor.config.base import Frozen, field_problems
from processor.config.scalars import (
    ConfigPath,
    ExistingFile,
    FiniteFloat,
    GiB,
    HeaderName,
    HeaderValue,
    HttpPath,
    MiB,
    NonNegativeDuration,
    PositiveDuration,
    PositiveInt,
    RemoteEndpoint,
    size_between,
    to_size,
    unique_header_names,
)
from processor.export.endpoint_url import EndpointProblem, from_url


class RetryConfig(Frozen):
    """Exponential back-off for retryable export failures (the Collector's defaults).

    A batch still failing after ``max_elapsed`` goes back to the end of the queue
    rather than being dropped: only permanent errors drop data.
    """

    enabled: StrictBool = True
    initial_interval: PositiveDuration = 5.0
    max_interval: PositiveDuration = 30.0
    # 0: no limit, the batch is retried until it is delivered (the Collector's meaning).
    max_elapsed: NonNegativeDuration = 300.0
    multiplier: Annotated[FiniteFloat, Field(ge=1)] = 1.5
    jitter: Annotated[FiniteFloat, Field(ge=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _check_intervals(self) -> Self:
        """``max_interval`` must not be below ``initial_interval``."""
        if self.max_interval < self.initial_interval:
            raise field_problems(
                type(self).__name__, [("max_interval", "must be >= initial_interval")]
            )
        return self


class QueueConfig(Frozen):
    """Accepted batches wait here for the downstream; full means backpressure.

    With ``directory`` set, every accepted request is written to disk before the
    sender is answered and removed only once all its spans were delivered.
    """

    size: PositiveInt = 1000  # requests (the Collector's default queue size)
    max_bytes: Annotated[int, BeforeValidator(to_size), size_between(MiB, 16 * GiB)] = 256 * MiB
    consumers: Annotated[int, Field(strict=True, ge=1, le=256)] = 10
    # Batches waiting together are sent as one request up to this size (0: never).
    # Keep it under the downstream's limit (Jaeger and the Collector: 4 MiB).
    merge_bytes: Annotated[int, BeforeValidator(to_size), size_between(0, 64 * MiB)] = 2 * MiB
    directory: ConfigPath | None = None
    max_spool_bytes: Annotated[int, BeforeValidator(to_size), size_between(MiB, 1024 * GiB)] = GiB
    # On shutdown, how long to keep delivering before giving up (spooling or counting).
    drain_timeout: NonNegativeDuration = 10.0
    # The delay a sender is told to wait (RetryInfo) when the queue is full.
    retry_after: PositiveDuration = 1.0


class ExporterConfig(Frozen):
    """The downstream OTLP collector that enriched spans are sent to (gRPC or HTTP)."""

    endpoint: RemoteEndpoint
    # grpc: TraceService/Export; http: POST http(s)://endpoint + http_path (protobuf).
    protocol: Literal["grpc", "http"] = "grpc"
    http_path: HttpPath = "/v1/traces"
    insecure: StrictBool = False
    ca_file: ExistingFile | None = None
    headers: Annotated[dict[HeaderName, HeaderValue], BeforeValidator(unique_header_names)] = Field(
        default_factory=dict
    )
    compression: Literal["gzip", "none"] = "gzip"
    timeout: PositiveDuration = 5.0  # per attempt
    retry: RetryConfig = Field(default_factory=RetryConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)

    @model_validator(mode="before")
    @classmethod
    def _split_url(cls, data: Any) -> Any:
        """``endpoint: http(s)://host:port/path`` becomes endpoint, insecure and http_path."""
        if not isinstance(data, Mapping):
            return data
        try:
            return from_url(data)
        except EndpointProblem as problem:
            raise field_problems(cls.__name__, [(problem.field, problem.message)]) from None

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        """A CA file makes no sense on a plaintext connection."""
        if self.insecure and self.ca_file is not None:
            raise field_problems(
                type(self).__name__, [("ca_file", "cannot be used with insecure: true")]
            )
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Like the default, but header values (often credentials) are masked."""
        for name, value in super().__repr_args__():
            if name == "headers":
                yield name, dict.fromkeys(self.headers, "**********")
            else:
                yield name, value
