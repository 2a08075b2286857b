"""Scalar values of the config: durations, sizes, endpoints, header names, paths.

Each is an ``Annotated`` type that a room's config section uses for its keys;
the parse functions are public for the CLI and tests.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationInfo,
)

from processor.config.base import load_context

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


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


def to_duration(value: Any) -> float:
    """BeforeValidator adapter for :func:`parse_duration`."""
    return parse_duration(value)


def to_size(value: Any) -> int:
    """BeforeValidator adapter for :func:`parse_size`."""
    return parse_size(value)


def size_between(low: int, high: int) -> AfterValidator:
    """An AfterValidator enforcing ``low <= size <= high`` with a human message."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {format_size(low)} and {format_size(high)}")
        return value

    return AfterValidator(check)


def format_size(size: int) -> str:
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
    context = load_context(info)
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


def unique_header_names(value: Any) -> Any:
    """Reject header names that differ only in case (they would silently merge)."""
    if isinstance(value, Mapping):
        seen: set[str] = set()
        for key in value:
            if isinstance(key, str) and key.lower() in seen:
                raise ValueError(f"duplicate header {key!r} (header names are case-insensitive)")
            if isinstance(key, str):
                seen.add(key.lower())
    return value


def no_duplicates(values: tuple[str, ...]) -> tuple[str, ...]:
    """Reject repeated entries in a list."""
    duplicates = sorted({value for value in values if values.count(value) > 1})
    if duplicates:
        raise ValueError(f"duplicate entries: {', '.join(duplicates)}")
    return values


def optional_ip(value: str) -> str:
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


def lower(value: Any) -> Any:
    """Lower-case strings so ``INFO`` and ``info`` both work."""
    return value.lower() if isinstance(value, str) else value


Duration = Annotated[float, BeforeValidator(to_duration)]
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


ExistingFile = Annotated[ConfigPath, AfterValidator(_existing_file)]
