"""The span path: find each span's user and insert identity attributes (pure).

Called once per Export request. No I/O, no clock reads, no logging: it takes the
decoded request plus a session lookup and returns counts for the caller to record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

from processor.correlate.address import AddressFinder, AddressNormalizer
from processor.correlate.identity import IDENTITY_KEYS, WRITTEN_KEYS, IdentityEncoder
from processor.model import User
from processor.sessions.store import SessionLookup

METHOD_SESSION = "session"
CONFIDENCE_HIGH = "high"

_IDENTITY = frozenset(IDENTITY_KEYS)
_WRITTEN = frozenset(WRITTEN_KEYS)


@dataclass(slots=True)
class EnrichStats:
    """What happened to the spans of one request."""

    spans: int = 0
    enriched: int = 0
    unmatched: int = 0
    ambiguous: int = 0
    identified: int = 0  # a producer already set the user: left alone
    no_address: int = 0


def _key_marker(keys: Sequence[str]) -> re.Pattern[bytes]:
    """Regex matching the wire encoding of a KeyValue.key equal to one of ``keys``.

    KeyValue.key is field 1, wire type 2 (tag 0x0a), then a one-byte length for
    keys under 128 bytes. If no match occurs anywhere in the request bytes, no
    span can carry any of these keys, and the per-span check is skipped.
    """
    encoded = [b"\n" + bytes([len(k)]) + k.encode() for k in keys]
    return re.compile(b"|".join(re.escape(e) for e in encoded))


class Enricher:
    """Compiled enrichment rules plus memo caches; one instance serves all requests."""

    def __init__(self, address_keys: Sequence[str]) -> None:
        self._span_addr = AddressFinder(address_keys)
        self._resource_addr = AddressFinder(address_keys)
        self._normalize = AddressNormalizer()
        self._encoder = IdentityEncoder()
        self._marker = _key_marker(WRITTEN_KEYS)

    def enrich(
        self, request: ExportTraceServiceRequest, raw: bytes, lookup: SessionLookup
    ) -> EnrichStats:
        """Insert the session user into every span that has exactly one; return counts.

        ``raw`` must be the bytes ``request`` was decoded from: they are only
        searched, to learn whether any span may already carry identity keys.
        """
        stats = EnrichStats()
        # memchr-speed coarse test first: every written key contains "user.".
        check_present = b"user." in raw and self._marker.search(raw) is not None
        empty = len(lookup) == 0
        for rs in request.resource_spans:
            if empty:
                stats.spans += sum(len(ss.spans) for ss in rs.scope_spans)
                continue
            resource_attrs = rs.resource.attributes
            if check_present and _has_identity(resource_attrs):
                n = _count(rs.scope_spans)
                stats.spans += n
                stats.identified += n
                continue
            raw_addr = self._resource_addr.find(resource_attrs)
            resource_ip = self._normalize(raw_addr) if raw_addr else None
            for ss in rs.scope_spans:
                self._enrich_spans(ss.spans, resource_ip, lookup, check_present, stats)
        if empty:
            stats.unmatched = stats.spans
        return stats

    def _enrich_spans(
        self,
        spans: Sequence[Span],
        resource_ip: str | None,
        lookup: SessionLookup,
        check_present: bool,
        stats: EnrichStats,
    ) -> None:
        find, normalize = self._span_addr.find, self._normalize
        stats.spans += len(spans)
        # Spans of one batch mostly share a few addresses and lie close in time, so
        # each address's last answer is reused while the span time stays in its range.
        memo: dict[str, tuple[int, int, tuple[User, ...], bytes]] = {}
        for span in spans:
            attrs = span.attributes
            present = _present_keys(attrs) if check_present else None
            if present and not present.isdisjoint(_IDENTITY):
                stats.identified += 1
                continue
            raw_addr = find(attrs)
            ip = normalize(raw_addr) if raw_addr else resource_ip
            if ip is None:
                stats.no_address += 1
                continue
            t = span.start_time_unix_nano
            hit = memo.get(ip)
            if hit is not None and hit[0] <= t < hit[1]:
                users, data = hit[2], hit[3]
            else:
                users, until = lookup.users_at(ip, t)
                data = b""
                if len(users) == 1:
                    data = self._encoder.encoded(users[0], METHOD_SESSION, CONFIDENCE_HIGH)
                memo[ip] = (t, until, users, data)
            if len(users) != 1:
                if users:
                    stats.ambiguous += 1
                else:
                    stats.unmatched += 1
                continue
            if present:
                span.MergeFromString(
                    self._encoder.encoded_absent(users[0], METHOD_SESSION, CONFIDENCE_HIGH, present)
                )
            else:
                span.MergeFromString(data)
            stats.enriched += 1


def _present_keys(attributes: Sequence[KeyValue]) -> set[str]:
    """The keys among those we write that ``attributes`` already has."""
    return {kv.key for kv in attributes if kv.key in _WRITTEN}


def _has_identity(attributes: Sequence[KeyValue]) -> bool:
    return any(kv.key in _IDENTITY for kv in attributes)


def _count(scope_spans: Sequence[ScopeSpans]) -> int:
    return sum(len(ss.spans) for ss in scope_spans)
