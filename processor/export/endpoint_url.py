"""``exporter.endpoint`` written as a URL, the way Collector users write it.

``http://jaeger:4318`` and ``https://otel.example.com/otlp`` are turned into the
``host:port`` + ``insecure`` + ``http_path`` the exporter section holds:

- ``http://`` means plaintext (``insecure: true``), ``https://`` means TLS; an
  explicit ``insecure`` that says otherwise is an error, not a silent choice.
- The port defaults to the scheme's (80, 443) when the URL has none.
- With ``protocol: http`` a URL path is a prefix of ``http_path`` (``/otlp`` +
  ``/v1/traces``), as the Collector's otlphttp exporter appends ``/v1/traces``.
  gRPC has no path, so a path there is an error.
- Port 4318 is OTLP/HTTP's port: with no ``protocol`` given (gRPC by default)
  it is an error with the fix in it, instead of a stream of failed exports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

OTLP_HTTP_PORT = 4318
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES = ("http://", "https://")


class EndpointProblem(Exception):
    """A URL endpoint that cannot be used; ``field`` is the key to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def from_url(section: Mapping[str, Any]) -> Mapping[str, Any]:
    """``section`` (raw exporter keys) with a URL endpoint split into its keys."""
    endpoint = section.get("endpoint")
    if not isinstance(endpoint, str):
        return section
    if not endpoint.lower().startswith(_SCHEMES):
        _check_implicit_grpc(section, endpoint)
        return section
    scheme, host, port, path = _split(endpoint)
    protocol = section.get("protocol", "grpc")
    updated = dict(section)
    updated["endpoint"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    updated["insecure"] = _insecure(section, scheme)
    if path:
        if protocol != "http":
            raise EndpointProblem(
                "endpoint", f"a gRPC endpoint has no path ({path}); use protocol: http or drop it"
            )
        updated["http_path"] = path + section.get("http_path", "/v1/traces")
    _check_implicit_grpc(updated, updated["endpoint"])
    return updated


def _split(endpoint: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and path (without a trailing '/') of a URL endpoint."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        raise EndpointProblem("endpoint", f"not a valid URL: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise EndpointProblem(
            "endpoint", "credentials do not belong in the URL; use exporter.headers"
        )
    if parts.query or parts.fragment:
        raise EndpointProblem("endpoint", "a URL endpoint takes no query or fragment")
    if not parts.hostname:
        raise EndpointProblem("endpoint", "the URL has no host")
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme], parts.path.rstrip("/")


def _insecure(section: Mapping[str, Any], scheme: str) -> bool:
    """``http`` is plaintext, ``https`` TLS; a contradicting explicit ``insecure`` is an error."""
    plaintext = scheme == "http"
    explicit = section.get("insecure")
    if isinstance(explicit, str):  # from ${env:...}, not yet typed
        explicit = {"true": True, "false": False}.get(explicit.lower(), explicit)
    if explicit is not None and explicit is not plaintext:
        raise EndpointProblem(
            "insecure",
            f"insecure: {str(explicit).lower()} contradicts the {scheme}:// endpoint;"
            " drop insecure or change the scheme",
        )
    return plaintext


def _check_implicit_grpc(section: Mapping[str, Any], endpoint: str) -> None:
    """Port 4318 with the protocol left at its gRPC default is almost surely a mistake."""
    if "protocol" in section or not endpoint.endswith(f":{OTLP_HTTP_PORT}"):
        return
    raise EndpointProblem(
        "endpoint",
        f"port {OTLP_HTTP_PORT} is OTLP/HTTP but the exporter speaks gRPC by default;"
        " set exporter.protocol: http (or protocol: grpc to really use gRPC on it)",
    )
