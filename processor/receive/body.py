"""Reading an OTLP/HTTP body: bounded decompression, OTLP/JSON to protobuf, and the
refusal (with its status) when the body cannot be read."""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from processor import status
from processor.errors import InvalidInput, Problem
from processor.receive.otlp_json import decode_json
from processor.status import Status

Encoding = Literal["protobuf", "json"]

# Content codings accepted, mapped to zlib's wbits (gzip framing, zlib framing).
CODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
IDENTITY = frozenset({"", "identity"})
# Input fed to zlib at a time, and the most gzip members one body may hold.
_INFLATE_CHUNK = 16 * 1024
# Output produced per zlib call at most (the copy into the body holds the GIL).
_INFLATE_STEP = 1024 * 1024
MAX_GZIP_MEMBERS = 1024


class Rejected(Exception):
    """A request refused before it reached the pipeline: its status and message."""

    def __init__(
        self,
        status: Status,
        message: str,
        outcome: str,
        problems: tuple[Problem, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome
        self.problems = problems


# Large decodes run here: one core is left to the event loop, so that a flood of
# bodies that take long to inflate slows those senders, not everyone else.
DECODERS = ThreadPoolExecutor(
    max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="otlp-http-decode"
)


class Bigger(Exception):
    """The work outgrew what is done on the event loop: do it in a worker thread."""


def decode_body(
    body: bytes, encoding: Encoding, coding: str, limit: int, inline: int | None = None
) -> bytes:
    """The protobuf bytes to hand to the pipeline; with ``inline``, raises Bigger
    once the decompressed body passes that many bytes (see ``HttpTraceReceiver._decode``)."""
    if coding in CODINGS:
        body = decompress(body, CODINGS[coding], coding, limit, inline)
    if encoding == "json" and inline is not None and len(body) > inline:
        raise Bigger
    if encoding == "json":
        try:
            message = decode_json(body)
        except InvalidInput as exc:
            raise Rejected(
                status.INVALID,
                f"invalid OTLP/JSON ExportTraceServiceRequest: {exc}",
                "invalid",
                tuple(exc.problems),
            ) from None
        return bytes(message.SerializeToString())
    return body


def decompress(
    body: bytes, wbits: int, coding: str, limit: int, inline: int | None = None
) -> bytes:
    """Inflate ``body`` (one or more gzip members), refusing more than ``limit`` bytes.

    Linear in the body: the input is fed in chunks, so what zlib copies at the end
    of each member (its ``unused_data``) is at most one chunk, not the rest of the
    body (which made many tiny members cost quadratic time). At most
    ``MAX_GZIP_MEMBERS`` members are read; real exporters send one.
    """
    out = bytearray()
    view = memoryview(body)
    pos = 0
    pending = b""  # input left after the end of the previous member
    chunk: bytes | memoryview
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof:
            if pending:
                chunk, pending = pending, b""
            elif pos < len(view):
                chunk = view[pos : pos + _INFLATE_CHUNK]
                pos += len(chunk)
            else:
                raise corrupt(coding, "truncated stream")
            while chunk:  # at most _INFLATE_STEP out per call: the GIL is held for short
                try:
                    out += inflater.decompress(chunk, min(_INFLATE_STEP, limit + 1 - len(out)))
                except zlib.error as exc:
                    raise corrupt(coding, str(exc)) from None
                if len(out) > limit:
                    raise too_large(limit, decompressed=True)
                if inline is not None and len(out) > inline:
                    raise Bigger
                chunk = inflater.unconsumed_tail
        pending = inflater.unused_data
        if wbits != CODINGS["gzip"] or (not pending and pos >= len(view)):
            break
    else:
        raise corrupt(coding, f"more than {MAX_GZIP_MEMBERS} gzip members")
    if pending or pos < len(view):
        raise corrupt(coding, "data after the end of the stream")
    return bytes(out)


def corrupt(coding: str, detail: str) -> Rejected:
    return Rejected(status.INVALID, f"cannot decompress {coding} body: {detail}", "invalid")


def too_large(limit: int, *, decompressed: bool = False) -> Rejected:
    what = "decompressed body" if decompressed else "body"
    return Rejected(
        status.TOO_LARGE,
        f"{what} larger than receiver.max_message_bytes ({limit} bytes)",
        "too_large",
    )
