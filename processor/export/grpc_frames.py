"""gRPC over HTTP/2 as bytes: the framed request and the answer's meaning.

The pure half of :mod:`h2_grpc` (no I/O): "Length-Prefixed-Message" framing,
the ``grpc-timeout`` header, and turning an answer's headers, trailers and
data into the message bytes or an :class:`ExportFailed`, per the gRPC spec
("PROTOCOL-HTTP2", "HTTP to gRPC Status Code Mapping").
"""

from __future__ import annotations

import gzip
import math
from base64 import b64decode
from urllib.parse import unquote

import grpc
from h2.errors import ErrorCodes

from processor.export.classify import ExportFailed, export_failed
from processor.export.compress import gzip_fast

MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # an Export answer is a few bytes; refuse floods

_CODES = {code.value[0]: code for code in grpc.StatusCode}

# gRPC, "HTTP to gRPC Status Code Mapping": a non-200 answer without grpc-status.
_FROM_HTTP = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}

# gRPC over HTTP/2, "Errors": what an RST_STREAM code means to the caller.
_FROM_RESET: dict[int, grpc.StatusCode] = {
    ErrorCodes.REFUSED_STREAM: grpc.StatusCode.UNAVAILABLE,  # not processed: safe to retry
    ErrorCodes.CANCEL: grpc.StatusCode.CANCELLED,
    ErrorCodes.ENHANCE_YOUR_CALM: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCodes.INADEQUATE_SECURITY: grpc.StatusCode.PERMISSION_DENIED,
}

Pairs = list[tuple[str, str]]


class Answer:
    """One call's answer as it arrives: headers, trailers, message bytes, or a failure."""

    __slots__ = ("data", "failure", "headers", "trailers")

    def __init__(self) -> None:
        self.headers: Pairs = []
        self.trailers: Pairs = []
        self.data = bytearray()
        self.failure: ExportFailed | None = None


def frame_compressed(body: bytes) -> bytes:
    """One gRPC message of an already compressed ``body``: flag 1, 4-byte length, body."""
    return b"\x01" + len(body).to_bytes(4, "big") + body


def frame_gzip(payload: bytes) -> bytes:
    """One gRPC message: ``payload`` gzipped (ISA-L level 1), framed."""
    return frame_compressed(gzip_fast(payload))


def grpc_timeout(seconds: float) -> str:
    """The ``grpc-timeout`` header for ``seconds`` (milliseconds, at most 8 digits)."""
    return f"{min(math.ceil(seconds * 1000), 99_999_999)}m"


def reset_failure(error_code: int) -> ExportFailed:
    """What an RST_STREAM from the server means to the caller."""
    code = _FROM_RESET.get(error_code, grpc.StatusCode.INTERNAL)
    try:
        name = ErrorCodes(error_code).name
    except ValueError:
        name = f"error code {error_code}"
    return export_failed(code, f"stream reset by the collector ({name})", None)


def text_pairs(pairs: list[tuple[bytes, bytes]]) -> Pairs:
    return [
        (name.decode("ascii", "replace"), value.decode("utf-8", "replace")) for name, value in pairs
    ]


def answer_of(stream: Answer) -> bytes | None:
    """The answer's message bytes; raise ExportFailed for any non-OK outcome.

    None: an OK status whose message could not be unpacked (nothing to report).
    """
    if stream.failure is not None:
        raise stream.failure
    headers = dict(stream.headers)
    trailers = stream.trailers or stream.headers  # "Trailers-Only": status in the headers
    status = dict(trailers).get("grpc-status")
    http_status = headers.get(":status", "")
    if status is None:
        if http_status != "200":
            code = _FROM_HTTP.get(int(http_status) if http_status.isdigit() else 0)
            raise export_failed(code or grpc.StatusCode.UNKNOWN, f"HTTP status {http_status}", None)
        raise export_failed(grpc.StatusCode.UNKNOWN, "the answer carried no grpc-status", None)
    code = _CODES.get(int(status) if status.isdigit() else -1, grpc.StatusCode.UNKNOWN)
    if code is not grpc.StatusCode.OK:
        details = unquote(dict(trailers).get("grpc-message", ""))
        raise export_failed(code, details, _binary(trailers))
    data = stream.data
    if len(data) < 5:
        return None
    length = int.from_bytes(data[1:5], "big")
    message = bytes(data[5 : 5 + length])
    if data[0] == 0:
        return message
    if headers.get("grpc-encoding") != "gzip":
        return None
    try:
        return gzip.decompress(message)
    except (OSError, EOFError):
        return None


def _binary(pairs: Pairs) -> list[tuple[str, str | bytes]]:
    """Trailers as grpcio hands them over: ``-bin`` values base64-decoded to bytes."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in pairs:
        if name.endswith("-bin"):
            try:
                out.append((name, b64decode(value + "=" * (-len(value) % 4))))
            except ValueError:
                continue
        else:
            out.append((name, value))
    return out
