"""Start-up configuration: YAML file -> validated, frozen ``Config`` objects."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    StrictBool,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from yaml.constructor import ConstructorError

from processor.config_env import EnvScalar, expand_env, typed_for
from processor.errors import ConfigError, Problem
from processor.export.endpoint_url import EndpointProblem, from_url

__all__ = [
    "HASH_KEY_ENV_VAR",
    "RECEIVER_TOKEN_ENV_VAR",
    "REDIS_PASSWORD_ENV_VAR",
    "REDIS_URL_ENV_VAR",
    "TOKEN_ENV_VAR",
    "WEBHOOK_SECRET_ENV_VAR",
    "ApiConfig",
    "Config",
    "CorrelationConfig",
    "DirectoryConfig",
    "ExporterConfig",
    "IdentityConfig",
    "LoggingConfig",
    "OpenWebUIWebhookConfig",
    "PriceConfig",
    "QueueConfig",
    "RateLimitConfig",
    "ReceiverAuthConfig",
    "ReceiverConfig",
    "RetryConfig",
    "SessionsConfig",
    "TlsConfig",
    "UsageConfig",
    "WebhooksConfig",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "split_endpoint",
]

TOKEN_ENV_VAR = "USER_ENRICHER_API_TOKEN"
"""Environment variable that overrides ``api.token`` and ``api.token_file``."""

MIN_TOKEN_LENGTH = 8

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

DEFAULT_ADDRESS_ATTRIBUTES = (
    "src.addr",
    "client.address",
    "network.peer.address",
    "net.peer.ip",
    "net.sock.peer.addr",
    "http.client_ip",
)

# --------------------------------------------------------------------------- scalar parsers

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+")
_PLAIN_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DURATION_HINT = "expected a duration like 500ms, 10s, 30m or 1h30m"

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
}
_SIZE_RE = re.compile(r"([0-9]+) ?([A-Za-z]*)")
_SIZE_HINT = "expected a size like 512KiB, 64MiB or 4MB"

_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_PORT_RE = re.compile(r"[0-9]{1,5}")
_ENDPOINT_HINT = "expected host:port, e.g. 127.0.0.1:4317 or [::1]:4317"

_METADATA_KEY_RE = re.compile(r"[a-z0-9_.-]+")


def parse_duration(text: str | int | float) -> float:
    """Parse ``"500ms"``, ``"10s"``, ``"1h30m"`` or a plain number of seconds into seconds."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"{_DURATION_HINT}, got {text!r}")
    if isinstance(text, int | float):
        return _check_seconds(float(text))
    stripped = text.strip()
    if _PLAIN_NUMBER_RE.fullmatch(stripped):
        return float(stripped)
    if not _DURATION_RE.fullmatch(stripped):
        raise ValueError(f"{_DURATION_HINT}, got {text!r}")
    parts = _DURATION_PART.findall(stripped)
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _check_seconds(seconds: float) -> float:
    """Reject negative and non-finite numbers of seconds."""
    if not math.isfinite(seconds):
        raise ValueError(f"{_DURATION_HINT}, got {seconds!r}")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_size(text: str | int) -> int:
    """Parse a byte count: an int, or a string like ``"64MiB"``, ``"512KiB"``, ``"4MB"``."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise ValueError(f"{_SIZE_HINT}, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("must not be negative")
        return text
    match = _SIZE_RE.fullmatch(text.strip())
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{_SIZE_HINT}, got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS[unit]


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """Split ``"host:port"`` or ``"[ipv6]:port"`` into ``(host, port)``; port 0 is allowed."""
    if "://" in endpoint:
        raise ValueError(f"expected host:port without a URL scheme, got {endpoint!r}")
    if endpoint.startswith("["):
        host, sep, port = endpoint[1:].partition("]:")
        if not sep:
            raise ValueError(f"{_ENDPOINT_HINT}, got {endpoint!r}")
        _check_ipv6(host, endpoint)
    else:
        host, sep, port = endpoint.rpartition(":")
        if not sep:
            raise ValueError(f"{_ENDPOINT_HINT}, got {endpoint!r}")
        if ":" in host:
            raise ValueError(
                f"IPv6 addresses must be in brackets, like [::1]:4317; got {endpoint!r}"
            )
        if not _HOST_RE.fullmatch(host):
            raise ValueError(f"{_ENDPOINT_HINT}, got {endpoint!r}")
    return host, _parse_port(port, endpoint)


def _check_ipv6(host: str, endpoint: str) -> None:
    """Raise ValueError unless ``host`` (from inside brackets) is an IPv6 address."""
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError(f"{host!r} in {endpoint!r} is not an IPv6 address") from None


def _parse_port(port: str, endpoint: str) -> int:
    """Parse a decimal port number in 0..65535."""
    if not _PORT_RE.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"port must be a number from 0 to 65535, got {endpoint!r}")
    return int(port)


# --------------------------------------------------------------------------- validation helpers


@dataclass(frozen=True, slots=True)
class _LoadContext:
    """What validators need from ``parse_config``: where the file lives and the environment."""

    base_dir: Path
    env: Mapping[str, str]


def _load_context(info: ValidationInfo) -> _LoadContext | None:
    """The load context, or None when a model is constructed directly in code."""
    return info.context if isinstance(info.context, _LoadContext) else None


def _field_problems(title: str, problems: Sequence[tuple[str, str]]) -> ValidationError:
    """Build a ValidationError locating each ``(field, message)`` pair; inputs are never kept."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError("config_problem", "{message}", {"message": message}),
            loc=(field,),
            input=None,
        )
        for field, message in problems
    ]
    return ValidationError.from_exception_data(title, details)


def _duration(value: Any) -> float:
    """BeforeValidator adapter for :func:`parse_duration`."""
    return parse_duration(value)


def _size(value: Any) -> int:
    """BeforeValidator adapter for :func:`parse_size`."""
    return parse_size(value)


def _size_between(low: int, high: int) -> AfterValidator:
    """An AfterValidator enforcing ``low <= size <= high`` with a human message."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {_format_size(low)} and {_format_size(high)}")
        return value

    return AfterValidator(check)


def _format_size(size: int) -> str:
    """Render a byte count in the largest binary unit that divides it."""
    if size == 0:
        return "0"
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def _endpoint(value: str, *, allow_port_zero: bool) -> str:
    """Check ``host:port`` syntax; port 0 only where ``allow_port_zero``."""
    _, port = split_endpoint(value)
    if port == 0 and not allow_port_zero:
        raise ValueError("port must be from 1 to 65535")
    return value


def _listen_endpoint(value: str) -> str:
    """Endpoint we listen on (port 0 picks a free port)."""
    return _endpoint(value, allow_port_zero=True)


def _optional_listen_endpoint(value: str) -> str:
    """Endpoint we listen on, or empty for "do not listen"."""
    return _listen_endpoint(value) if value else value


def _http_path(value: str) -> str:
    """An absolute URL path such as ``/v1/traces`` (no scheme, host, query or spaces)."""
    if not value.startswith("/"):
        raise ValueError("must start with '/', e.g. /v1/traces")
    if not all("!" <= char <= "~" for char in value) or "?" in value or "#" in value:
        raise ValueError("must be a plain URL path: printable ASCII, no spaces, '?' or '#'")
    return value


def _remote_endpoint(value: str) -> str:
    """Endpoint we connect to (needs a real port)."""
    return _endpoint(value, allow_port_zero=False)


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Resolve a path relative to the config file's directory (the cwd outside parse_config)."""
    if not value.strip():
        raise ValueError("must not be empty")
    context = _load_context(info)
    base_dir = context.base_dir if context else Path.cwd()
    return str(base_dir / Path(value).expanduser())


def _existing_file(value: str) -> str:
    """Require that ``value`` names an existing regular file."""
    if not Path(value).is_file():
        raise ValueError(f"file not found: {value}")
    return value


def _metadata_key(value: str) -> str:
    """Lower-case a header name and check it is usable as (ASCII) gRPC metadata."""
    key = value.lower()
    if not _METADATA_KEY_RE.fullmatch(key):
        raise ValueError("invalid header name: use only a-z, 0-9, '-', '_' and '.'")
    if key.startswith("grpc-"):
        raise ValueError("header names starting with 'grpc-' are reserved by gRPC")
    if key.endswith("-bin"):
        raise ValueError("binary ('-bin') headers are not supported")
    return key


def _metadata_value(value: str) -> str:
    """gRPC ASCII metadata values must be printable ASCII."""
    if not all(" " <= char <= "~" for char in value):
        raise ValueError("header values must be printable ASCII")
    return str(value)


def _unique_header_names(value: Any) -> Any:
    """Reject header names that differ only in case (they would silently merge)."""
    if isinstance(value, Mapping):
        seen: set[str] = set()
        for key in value:
            if isinstance(key, str) and key.lower() in seen:
                raise ValueError(f"duplicate header {key!r} (header names are case-insensitive)")
            if isinstance(key, str):
                seen.add(key.lower())
    return value


def _no_duplicates(values: tuple[str, ...]) -> tuple[str, ...]:
    """Reject repeated entries in a list."""
    duplicates = sorted({value for value in values if values.count(value) > 1})
    if duplicates:
        raise ValueError(f"duplicate entries: {', '.join(duplicates)}")
    return values


def _optional_ip(value: str) -> str:
    """An IP address in canonical form, or empty."""
    if not value:
        return ""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("expected an IP address (no port), or empty") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _lower(value: Any) -> Any:
    """Lower-case strings so ``INFO`` and ``info`` both work."""
    return value.lower() if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(_duration)]
PositiveDuration = Annotated[Duration, Field(gt=0)]
NonNegativeDuration = Annotated[Duration, Field(ge=0)]
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]
ListenEndpoint = Annotated[str, Field(strict=True), AfterValidator(_listen_endpoint)]
OptionalListenEndpoint = Annotated[
    str, Field(strict=True), AfterValidator(_optional_listen_endpoint)
]
HttpPath = Annotated[str, Field(strict=True), AfterValidator(_http_path)]
RemoteEndpoint = Annotated[str, Field(strict=True), AfterValidator(_remote_endpoint)]
ConfigPath = Annotated[str, Field(strict=True), AfterValidator(_resolve_path)]
HeaderName = Annotated[str, AfterValidator(_metadata_key)]
HeaderValue = Annotated[str, Field(strict=True), AfterValidator(_metadata_value)]
AttributeName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Frozen(BaseModel):
    """Base for every config section: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _type_env_values(cls, data: Any) -> Any:
        """Give each whole-value ``${env:...}`` the scalar type of the key it sets."""
        if not isinstance(data, Mapping):
            return data
        fields = cls.model_fields
        return {
            key: typed_for(fields[key].annotation, value)
            if isinstance(value, EnvScalar) and key in fields
            else value
            for key, value in data.items()
        }


# --------------------------------------------------------------------------- sections


RECEIVER_TOKEN_ENV_VAR = "USER_ENRICHER_RECEIVER_TOKEN"
"""Environment variable that overrides ``receiver.auth.token`` and ``token_file``."""

ExistingFile = Annotated[ConfigPath, AfterValidator(_existing_file)]


class _KeyNeedsPassword(Exception):
    """Raised from the password callback: we cannot unlock an encrypted key at start-up."""


def _refuse_password() -> bytes:
    """Password callback for ``load_cert_chain`` that never prompts on the terminal."""
    raise _KeyNeedsPassword


def _tls_pair_problems(cert: str | None, key: str | None, ca: str | None) -> list[tuple[str, str]]:
    """What is missing: a certificate needs its key and vice versa; a client CA needs both."""
    problems: list[tuple[str, str]] = []
    if cert is not None and key is None:
        problems.append(("key_file", "required when cert_file is set"))
    if key is not None and cert is None:
        problems.append(("cert_file", "required when key_file is set"))
    if ca is not None and cert is None and key is None:
        problems.append(("cert_file", "required when client_ca_file is set (mTLS needs TLS)"))
    return problems


def _pem_problems(cert: str, key: str, ca: str | None) -> list[tuple[str, str]]:
    """Load the PEM files as the servers will, so bad material fails at start-up."""
    problems = [("cert_file", f"no PEM certificate in {cert}")] if not _has_certs(cert) else []
    if not problems:
        problems += _key_problems(cert, key)
    if ca is not None and not _has_certs(ca):
        problems.append(("client_ca_file", f"no PEM certificate in {ca}"))
    return problems


def _has_certs(path: str) -> bool:
    """True when ``path`` holds at least one readable PEM certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


def _key_problems(cert: str, key: str) -> list[tuple[str, str]]:
    """Why ``key`` cannot serve ``cert`` (none when it can)."""
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key, password=_refuse_password)
    except _KeyNeedsPassword:
        return [("key_file", f"{key} is encrypted; use an unencrypted PEM key")]
    except (ssl.SSLError, OSError) as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            return [("key_file", f"{key} does not match the certificate in cert_file")]
        return [("key_file", f"no PEM private key in {key}")]
    return []


class TlsConfig(_Frozen):
    """TLS on a listener: certificate and key; with ``client_ca_file``, mutual TLS.

    Off while ``cert_file`` is unset. The files are loaded once during validation,
    so a wrong or mismatched file is a config error rather than a failed handshake.
    """

    cert_file: ExistingFile | None = None
    key_file: ExistingFile | None = None
    # Clients must present a certificate issued by a CA in this bundle (mTLS).
    client_ca_file: ExistingFile | None = None

    @property
    def enabled(self) -> bool:
        """True when the listener serves TLS."""
        return self.cert_file is not None

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        """Certificate and key come together and must load; a client CA needs both."""
        problems = _tls_pair_problems(self.cert_file, self.key_file, self.client_ca_file)
        if not problems and self.cert_file is not None and self.key_file is not None:
            problems = _pem_problems(self.cert_file, self.key_file, self.client_ca_file)
        if problems:
            raise _field_problems(type(self).__name__, problems)
        return self


class ReceiverAuthConfig(_Frozen):
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

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_token(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Apply the file/environment token sources and the token rules."""
        resolved: Self = _with_secret(cls, data, handler, info, _RECEIVER_TOKEN, lambda _: False)
        return resolved


class RateLimitConfig(_Frozen):
    """Token bucket per client IP on POST /v1/sessions and the webhook route."""

    # Sustained requests per second per client; 0 disables the limit.
    requests_per_second: Annotated[FiniteFloat, Field(ge=0)] = 200.0
    # Requests a client may send at once before the sustained rate applies.
    burst: PositiveInt = 400

    @property
    def enabled(self) -> bool:
        """True when requests are limited."""
        return self.requests_per_second > 0


class ReceiverConfig(_Frozen):
    """The OTLP receivers AgentGateway exports spans to: gRPC and, unless disabled, HTTP.

    Both share ``max_message_bytes``, ``tls`` and ``auth``.
    """

    grpc_endpoint: ListenEndpoint = "127.0.0.1:4317"
    # OTLP/HTTP (POST /v1/traces, protobuf or JSON); empty disables it.
    http_endpoint: OptionalListenEndpoint = "127.0.0.1:4318"
    max_message_bytes: Annotated[int, BeforeValidator(_size), _size_between(KiB, GiB)] = 64 * MiB
    # Bytes all requests being read, decompressed and decoded may hold together;
    # past it new requests are told to retry (429 / RESOURCE_EXHAUSTED). Unset: a
    # quarter of exporter.queue.max_bytes, and at least max_message_bytes.
    max_inflight_bytes: (
        Annotated[int, BeforeValidator(_size), _size_between(MiB, 64 * GiB)] | None
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
            raise _field_problems(
                type(self).__name__, [("http_endpoint", "must differ from grpc_endpoint")]
            )
        return self


def _same_fixed_address(a: str, b: str) -> bool:
    """True when two listen endpoints name the same host and the same non-zero port."""
    host_a, port_a = split_endpoint(a)
    host_b, port_b = split_endpoint(b)
    return port_a != 0 and (host_a, port_a) == (host_b, port_b)


class RetryConfig(_Frozen):
    """Exponential back-off for retryable export failures (the Collector's defaults).

    A batch still failing after ``max_elapsed`` goes back to the end of the queue
    rather than being dropped: only permanent errors drop data.
    """

    enabled: StrictBool = True
    initial_interval: PositiveDuration = 5.0
    max_interval: PositiveDuration = 30.0
    max_elapsed: PositiveDuration = 300.0
    multiplier: Annotated[FiniteFloat, Field(ge=1)] = 1.5
    jitter: Annotated[FiniteFloat, Field(ge=0, le=1)] = 0.5

    @model_validator(mode="after")
    def _check_intervals(self) -> Self:
        """``max_interval`` must not be below ``initial_interval``."""
        if self.max_interval < self.initial_interval:
            raise _field_problems(
                type(self).__name__, [("max_interval", "must be >= initial_interval")]
            )
        return self


class QueueConfig(_Frozen):
    """Accepted batches wait here for the downstream; full means backpressure.

    With ``directory`` set, every accepted request is written to disk before the
    sender is answered and removed only once all its spans were delivered.
    """

    size: PositiveInt = 1000  # requests (the Collector's default queue size)
    max_bytes: Annotated[int, BeforeValidator(_size), _size_between(MiB, 16 * GiB)] = 256 * MiB
    consumers: Annotated[int, Field(strict=True, ge=1, le=256)] = 10
    # Batches waiting together are sent as one request up to this size (0: never).
    # Keep it under the downstream's limit (Jaeger and the Collector: 4 MiB).
    merge_bytes: Annotated[int, BeforeValidator(_size), _size_between(0, 64 * MiB)] = 2 * MiB
    directory: ConfigPath | None = None
    max_spool_bytes: Annotated[int, BeforeValidator(_size), _size_between(MiB, 1024 * GiB)] = GiB
    # On shutdown, how long to keep delivering before giving up (spooling or counting).
    drain_timeout: NonNegativeDuration = 10.0
    # The delay a sender is told to wait (RetryInfo) when the queue is full.
    retry_after: PositiveDuration = 1.0


class ExporterConfig(_Frozen):
    """The downstream OTLP collector that enriched spans are sent to (gRPC or HTTP)."""

    endpoint: RemoteEndpoint
    # grpc: TraceService/Export; http: POST http(s)://endpoint + http_path (protobuf).
    protocol: Literal["grpc", "http"] = "grpc"
    http_path: HttpPath = "/v1/traces"
    insecure: StrictBool = False
    ca_file: Annotated[ConfigPath, AfterValidator(_existing_file)] | None = None
    headers: Annotated[dict[HeaderName, HeaderValue], BeforeValidator(_unique_header_names)] = (
        Field(default_factory=dict)
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
            raise _field_problems(cls.__name__, [(problem.field, problem.message)]) from None

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        """A CA file makes no sense on a plaintext connection."""
        if self.insecure and self.ca_file is not None:
            raise _field_problems(
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


class ApiConfig(_Frozen):
    """The session API that Open WebUI calls to register who is behind an address.

    When validated through :func:`parse_config`, ``token`` is the resolved token
    (``USER_ENRICHER_API_TOKEN``, else the contents of ``token_file``, else ``token``)
    and is required while the API is enabled. Constructed directly in code, the
    token is taken as given.
    """

    enabled: StrictBool = True
    endpoint: ListenEndpoint = "127.0.0.1:8089"
    token: SecretStr | None = None
    token_file: ConfigPath | None = None
    max_body_bytes: Annotated[int, BeforeValidator(_size), _size_between(KiB, 64 * MiB)] = MiB
    tls: TlsConfig = Field(default_factory=TlsConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_token(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Apply the file/environment token sources and the token rules."""
        resolved: Self = _with_secret(cls, data, handler, info, _API_TOKEN, lambda a: a.enabled)
        return resolved


_TOKEN_REQUIRED = (
    "required when the session API is enabled (set api.token, api.token_file "
    f"or {TOKEN_ENV_VAR}, or api.enabled: false)"
)


class _TokenProblem(Exception):
    """Why the API token could not be resolved; ``field`` is the key to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class _Token:
    """A token, the key it is reported on, and how to name its source in messages."""

    value: str
    field: str
    source: str


@dataclass(frozen=True, slots=True)
class _SecretRule:
    """Where a secret may come from and what it must look like."""

    value_key: str  # "token" / "secret"
    file_key: str  # "token_file" / "secret_file"
    env_var: str
    min_length: int
    required: str  # message when enabled and missing


_API_TOKEN = _SecretRule("token", "token_file", TOKEN_ENV_VAR, MIN_TOKEN_LENGTH, _TOKEN_REQUIRED)
# Never required (``enabled`` is always False): the receiver is open unless a token is set.
_RECEIVER_TOKEN = _SecretRule("token", "token_file", RECEIVER_TOKEN_ENV_VAR, 16, "")


def _with_secret(
    cls: type[BaseModel],
    data: Any,
    handler: ModelWrapValidatorHandler[Any],
    info: ValidationInfo,
    rule: _SecretRule,
    enabled: Callable[[Any], bool],
) -> Any:
    """Body of a section's wrap validator: resolve ``rule``'s secret into the section.

    Outside :func:`parse_config` (a section built in code) the value is taken as given.
    """
    section = handler(data)
    context = _load_context(info)
    if context is None:
        return section
    try:
        value = _resolve_secret(
            rule,
            getattr(section, rule.value_key),
            getattr(section, rule.file_key),
            enabled(section),
            context.env,
        )
    except _TokenProblem as problem:
        raise _field_problems(cls.__name__, [(problem.field, problem.message)]) from None
    return section.model_copy(update={rule.value_key: value})


def _resolve_secret(
    rule: _SecretRule,
    value: SecretStr | None,
    file: str | None,
    enabled: bool,
    env: Mapping[str, str],
) -> SecretStr | None:
    """The secret from env, file or inline value; raises _TokenProblem (never with the value)."""
    if value is not None and file is not None:
        raise _TokenProblem(
            rule.file_key, f"cannot be combined with {rule.value_key}; set only one"
        )
    token = _pick_secret(rule, value, file, env)
    if token is None or not token.value:
        if enabled:
            raise _TokenProblem(rule.value_key, rule.required)
        return None
    problem = _secret_problem(token.value, rule.min_length)
    if problem:
        raise _TokenProblem(token.field, f"{token.source} {problem}".lstrip())
    return SecretStr(token.value)


# Marks of the example files' placeholders (deploy/compose/secrets/*.example).
_PLACEHOLDER = re.compile(r"replace[-_ ]?me|change[-_ ]?me", re.IGNORECASE)


def _secret_problem(value: str, min_length: int) -> str:
    """Why ``value`` is not usable as a secret ("" when it is); never quotes the value."""
    if not value.strip():
        return "must not be blank (only whitespace)"
    if value != value.strip():
        return "must not start or end with whitespace (clients would not send it)"
    if len(value) < min_length:
        return f"must be at least {min_length} characters"
    if _PLACEHOLDER.search(value):
        return "is still a placeholder from the examples (REPLACE-ME/CHANGE-ME); set a real secret"
    return ""


def _pick_secret(
    rule: _SecretRule, value: SecretStr | None, file: str | None, env: Mapping[str, str]
) -> _Token | None:
    """The environment variable wins, then the file (read now), then the inline value."""
    from_env = env.get(rule.env_var, "").rstrip()
    if from_env:
        return _Token(from_env, rule.value_key, rule.env_var)
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8").rstrip()
        except (OSError, UnicodeDecodeError) as exc:
            raise _TokenProblem(rule.file_key, _read_failure(file, exc)) from None
        return _Token(text, rule.file_key, f"the {rule.value_key} in {file}")
    if value is not None:
        return _Token(value.get_secret_value(), rule.value_key, "")
    return None


def _read_failure(path: str | os.PathLike[str], exc: OSError | UnicodeDecodeError) -> str:
    """A one-line reason why ``path`` could not be read."""
    if isinstance(exc, UnicodeDecodeError):
        return f"{path} is not valid UTF-8"
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {path}"
    return f"cannot read {path}: {exc.strerror or exc}"


REDIS_URL_ENV_VAR = "USER_ENRICHER_REDIS_URL"
"""Environment variable that overrides ``sessions.store``."""
REDIS_PASSWORD_ENV_VAR = "USER_ENRICHER_REDIS_PASSWORD"
"""Environment variable that overrides ``sessions.redis_password`` and its file."""

_REDIS_PASSWORD = _SecretRule(
    "redis_password", "redis_password_file", REDIS_PASSWORD_ENV_VAR, 1, "required"
)


def _store_url(value: str) -> str:
    """``memory`` or a redis://, rediss:// or unix:// URL."""
    if value == "memory" or value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise ValueError("expected memory, or a redis://, rediss:// or unix:// URL")


class SessionsConfig(_Frozen):
    """The session table: in memory, or shared by every replica through Redis.

    With Redis, each replica keeps the whole table in memory (lookups never leave
    the process) and Redis carries changes between replicas (pub/sub) and the
    current state to replicas that start or reconnect (keys that expire by
    themselves).
    """

    ttl: PositiveDuration = 1800.0
    max_sessions: PositiveInt = 1_000_000
    sweep_interval: PositiveDuration = 30.0
    store: Annotated[str, Field(strict=True), AfterValidator(_store_url)] = "memory"
    redis_password: SecretStr | None = None
    redis_password_file: ConfigPath | None = None
    # CA bundle to verify a rediss:// server (system roots when unset).
    redis_ca_file: Annotated[ConfigPath, AfterValidator(_existing_file)] | None = None
    # Prefix of every key and channel, so several deployments can share a Redis.
    redis_prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,32}$")] = (
        "user-enricher:"
    )

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_redis(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Apply the environment overrides for the store URL and the password."""
        sessions = handler(data)
        context = _load_context(info)
        if context is None:
            return sessions
        update: dict[str, Any] = {}
        url = context.env.get(REDIS_URL_ENV_VAR, "").strip()
        if url:
            try:
                update["store"] = _store_url(url)
            except ValueError as exc:
                raise _field_problems(
                    cls.__name__, [("store", f"{REDIS_URL_ENV_VAR}: {exc}")]
                ) from None
        try:
            update["redis_password"] = _resolve_secret(
                _REDIS_PASSWORD,
                sessions.redis_password,
                sessions.redis_password_file,
                False,
                context.env,
            )
        except _TokenProblem as problem:
            raise _field_problems(cls.__name__, [(problem.field, problem.message)]) from None
        return sessions.model_copy(update=update)


class CorrelationConfig(_Frozen):
    """How a span is tied to a user: address keys, timing windows, holding, ambiguity."""

    address_attributes: Annotated[
        tuple[AttributeName, ...], Field(min_length=1), AfterValidator(_no_duplicates)
    ] = DEFAULT_ADDRESS_ATTRIBUTES
    # Extra span/resource attribute keys that name the user, mapped to the user field
    # they carry (besides the built-in user.*, enduser.id, client.user.* and
    # http.request.header.x-openwebui-user-* keys).
    identity_attributes: dict[AttributeName, Literal["id", "email", "name", "role"]] = Field(
        default_factory=dict
    )
    # Attributes holding the model a span asked for, in order of preference.
    model_attributes: Annotated[tuple[AttributeName, ...], AfterValidator(_no_duplicates)] = (
        "gen_ai.request.model",
        "gen_ai.response.model",
    )
    # A span whose start lies in [event - clock_skew, event + request_window]
    # matches a request event.
    request_window: PositiveDuration = 5.0
    clock_skew: NonNegativeDuration = 0.5
    # Learn each address's real event -> span lag from the traffic and match by
    # it (always inside the window above) once this many spans show it; false:
    # the configured window always decides.
    learn_lag: StrictBool = True
    lag_min_samples: Annotated[int, Field(strict=True, ge=10, le=100_000)] = 30
    # An address with no new evidence for this long of span time falls back to
    # the configured window.
    lag_stale_after: Annotated[Duration, Field(ge=60, le=86_400)] = 900.0
    # With a learned lag, several candidates are weighed by how likely each one's
    # lag is: the best user is named only when this many times likelier than the
    # next user and than "the span's own event was lost" (a ratio, no unit).
    likelihood_margin: Annotated[FiniteFloat, Field(ge=1.0, le=1_000_000.0)] = 10.0
    # How long a span without exact identity waits for its trace's identity or a
    # matching event; 0 disables holding.
    hold: NonNegativeDuration = 6.0
    max_held_spans: PositiveInt = 100_000
    ambiguous: Literal["skip", "nearest", "candidates"] = "skip"
    # How long a trace's identity is remembered, and how many traces at most.
    trace_ttl: PositiveDuration = 600.0
    max_traces: PositiveInt = 100_000


class DirectoryConfig(_Frozen):
    """Static file mapping addresses/CIDRs and principals (jwt.sub, API keys) to users."""

    file: Annotated[ConfigPath, AfterValidator(_existing_file)] | None = None
    reload_interval: PositiveDuration = 10.0
    # Span attributes whose values are looked up as principals in the directory.
    principal_attributes: Annotated[tuple[AttributeName, ...], AfterValidator(_no_duplicates)] = (
        "jwt.sub",
    )


WEBHOOK_SECRET_ENV_VAR = "USER_ENRICHER_WEBHOOK_SECRET"
"""Environment variable that overrides ``webhooks.openwebui.secret`` and ``secret_file``."""

_WEBHOOK_SECRET = _SecretRule(
    "secret",
    "secret_file",
    WEBHOOK_SECRET_ENV_VAR,
    16,
    "required when the Open WebUI webhook is enabled (set secret, secret_file "
    f"or {WEBHOOK_SECRET_ENV_VAR})",
)


class OpenWebUIWebhookConfig(_Frozen):
    """Open WebUI's event webhooks, received at POST /v1/webhooks/openwebui/<secret>.

    A webhook URL cannot carry an Authorization header, so the secret travels in
    the path; it must be at least 16 characters.
    """

    enabled: StrictBool = False
    secret: SecretStr | None = None
    secret_file: ConfigPath | None = None
    # The address AgentGateway sees for Open WebUI's requests. Empty: the
    # webhook's own peer address (right when both reach the service alike).
    source_ip: Annotated[str, AfterValidator(_optional_ip)] = ""

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_secret(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Apply the file/environment secret sources and the secret rules."""
        resolved: Self = _with_secret(
            cls, data, handler, info, _WEBHOOK_SECRET, lambda h: h.enabled
        )
        return resolved


class WebhooksConfig(_Frozen):
    """Identity sources that call us: Open WebUI's event webhooks."""

    openwebui: OpenWebUIWebhookConfig = Field(default_factory=OpenWebUIWebhookConfig)


HASH_KEY_ENV_VAR = "USER_ENRICHER_HASH_KEY"
"""Environment variable that overrides ``identity.hash_key`` and ``hash_key_file``."""

_HASH_KEY = _SecretRule(
    "hash_key",
    "hash_key_file",
    HASH_KEY_ENV_VAR,
    16,
    f"required when hash_emails is on (set hash_key, hash_key_file or {HASH_KEY_ENV_VAR})",
)


class IdentityConfig(_Frozen):
    """What identity the service writes onto spans."""

    # Write user.hash (a keyed hash of the email) instead of user.email and
    # user.name, for teams that must keep personal data out of Jaeger.
    hash_emails: StrictBool = False
    hash_key: SecretStr | None = None
    hash_key_file: ConfigPath | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_key(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Apply the file/environment key sources and the key rules."""
        resolved: Self = _with_secret(cls, data, handler, info, _HASH_KEY, lambda i: i.hash_emails)
        return resolved


class PriceConfig(_Frozen):
    """USD per million tokens of one model."""

    input_per_million: Annotated[FiniteFloat, Field(ge=0)]
    output_per_million: Annotated[FiniteFloat, Field(ge=0)]


class UsageConfig(_Frozen):
    """Per-user LLM usage metrics (requests, tokens, cost, errors) on /metrics."""

    enabled: StrictBool = True
    # Distinct users with their own label; later ones are counted as "other".
    max_users: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 1000
    # Model (as the gateway names it, case-insensitive) -> price, used when the
    # gateway did not price a call (no agw.ai.usage.cost.total).
    prices: dict[AttributeName, PriceConfig] = Field(default_factory=dict)
    # What the per-user metrics are labelled by (what /metrics tells its readers):
    # email (readable; the id when a user has no email), id (Open WebUI's user id,
    # never an email) or hash (keyed hash of the email; needs identity.hash_key).
    # Independent of what is written on spans; identity.hash_emails makes email
    # behave as hash.
    user_label: Literal["email", "id", "hash"] = "email"


METRICS_TOKEN_ENV_VAR = "USER_ENRICHER_METRICS_TOKEN"
"""Environment variable that sets (and overrides) ``telemetry.token``."""

_METRICS_TOKEN = _SecretRule("token", "token_file", METRICS_TOKEN_ENV_VAR, 16, "")


class TelemetryConfig(_Frozen):
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

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_token(
        cls, data: Any, handler: ModelWrapValidatorHandler[Self], info: ValidationInfo
    ) -> Self:
        """Apply the file/environment token sources and the token rules."""
        resolved: Self = _with_secret(cls, data, handler, info, _METRICS_TOKEN, lambda _: False)
        return resolved


class LoggingConfig(_Frozen):
    """Log level and output format (``auto`` = console on a TTY, JSON otherwise)."""

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ConnectionsConfig(_Frozen):
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


class Config(_Frozen):
    """The whole validated configuration."""

    receiver: ReceiverConfig = Field(default_factory=ReceiverConfig)
    exporter: ExporterConfig
    api: ApiConfig = Field(default_factory=ApiConfig)
    sessions: SessionsConfig = Field(default_factory=SessionsConfig)
    correlation: CorrelationConfig = Field(default_factory=CorrelationConfig)
    directory: DirectoryConfig = Field(default_factory=DirectoryConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    usage: UsageConfig = Field(default_factory=UsageConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    connections: ConnectionsConfig = Field(default_factory=ConnectionsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _label_key(self) -> Self:
        """Hashed metric labels need the hash key."""
        if self.usage.user_label == "hash" and self.identity.hash_key is None:
            raise _field_problems(
                "UsageConfig",
                [
                    (
                        "usage.user_label",
                        f"hash needs identity.hash_key (or hash_key_file, or {HASH_KEY_ENV_VAR})",
                    )
                ],
            )
        return self


# --------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate a YAML config file; raises ConfigError listing every problem."""
    file = Path(path)
    data = _read_yaml(file)
    if not isinstance(data, Mapping):
        kind = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        raise ConfigError([Problem("", f"config file {file} is {kind}")])
    return parse_config(
        data, base_dir=file.absolute().parent, env=os.environ if env is None else env
    )


def parse_config(data: Mapping[str, Any], *, base_dir: Path, env: Mapping[str, str]) -> Config:
    """Validate already-parsed YAML; relative paths are resolved against ``base_dir``.

    ``${env:VAR}`` references in values are expanded from ``env`` first
    (see :mod:`processor.config_env`).
    """
    if not isinstance(data, Mapping):
        raise ConfigError([Problem("", "the top level of the config must be a mapping")])
    expanded, unresolved = expand_env(data, env)
    if unresolved:
        raise ConfigError(unresolved)
    try:
        return Config.model_validate(
            _with_sections(expanded), context=_LoadContext(base_dir=base_dir, env=env)
        )
    except ValidationError as exc:
        problems = [_to_problem(error) for error in exc.errors(include_input=False)]
    raise ConfigError(problems)


def _with_sections(data: Mapping[str, Any]) -> dict[str, Any]:
    """Every section present (an empty or missing section means all defaults).

    Missing sections must still be validated so that, e.g., the token environment
    variable and the token requirement apply without an ``api:`` block.
    """
    sections: dict[str, Any] = {name: {} for name in Config.model_fields}
    for key, value in data.items():
        sections[key] = {} if value is None and key in sections else value
    return sections


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Construct a mapping, failing on a repeated key."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise ConstructorError(
                    "in the mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(file: Path) -> Any:
    """Load a YAML document, turning every failure into a ConfigError."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = _read_failure(file, exc).replace("file not found", "config file not found")
        raise ConfigError([Problem("", reason)]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", _yaml_failure(file, exc))]) from None


def _yaml_failure(file: Path, exc: yaml.YAMLError) -> str:
    """Describe a YAML error with its line and column (and where the broken construct began)."""
    problem = getattr(exc, "problem", None) or str(exc)
    message = f"invalid YAML in {file}{_at(getattr(exc, 'problem_mark', None))}: {problem}"
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        message += f" ({context} started{_at(context_mark)})"
    return message


def _at(mark: yaml.Mark | None) -> str:
    """`` at line L, column C`` for a YAML mark (1-based), or nothing."""
    return "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"


# --------------------------------------------------------------------------- error translation

_INTERNAL_LOC = re.compile(
    r"(function-(after|before|wrap|plain)|lax-or-strict|json-or-python|chain|nullable)\[.*\]"
)

_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown key",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "string_too_short": "must not be empty",
}

_BOUNDS = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be at most {}"),
}


def _to_problem(error: Mapping[str, Any]) -> Problem:
    """Translate one pydantic error into a Problem with a dotted path and a short message."""
    return Problem(_error_path(error["loc"]), _error_message(error))


def _error_path(loc: Sequence[str | int]) -> str:
    """Join a pydantic loc with dots, dropping pydantic's internal schema labels."""
    parts = [
        str(part)
        for part in loc
        if not (isinstance(part, str) and (part == "[key]" or _INTERNAL_LOC.fullmatch(part)))
    ]
    return ".".join(parts)


def _error_message(error: Mapping[str, Any]) -> str:
    """A short human message for a pydantic error (never including the input value)."""
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    if kind in _BOUNDS:
        key, template = _BOUNDS[kind]
        return template.format(_number(ctx[key]))
    if kind == "literal_error":
        return "must be one of " + ", ".join(re.findall(r"'([^']*)'", str(ctx["expected"])))
    if kind == "too_short":
        return "must not be empty"
    if kind in {"value_error", "assertion_error"}:
        return str(ctx["error"])
    return str(error["msg"])


def _number(value: Any) -> str:
    """Render 1.0 as ``1`` and 0.5 as ``0.5``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
