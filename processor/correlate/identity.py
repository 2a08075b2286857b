"""The attributes we write for an attribution, pre-encoded once per attribution (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.model import Attribution

USER_ID = "user.id"
USER_EMAIL = "user.email"
USER_NAME = "user.name"
USER_ROLES = "user.roles"
USER_TEAM = "user.team"
ENDUSER_ID = "enduser.id"
METHOD = "user.attribution.method"
CONFIDENCE = "user.attribution.confidence"
CANDIDATES = "user.attribution.candidates"
CANDIDATE_COUNT = "user.attribution.candidate_count"

WRITTEN_KEYS: tuple[str, ...] = (
    USER_ID,
    USER_EMAIL,
    USER_NAME,
    USER_ROLES,
    USER_TEAM,
    ENDUSER_ID,
    METHOD,
    CONFIDENCE,
    CANDIDATES,
    CANDIDATE_COUNT,
)

# Each entry is a few hundred bytes; a directory of this many users fits easily.
_CACHE_LIMIT = 16_384


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _texts(key: str, values: Iterable[str]) -> KeyValue:
    array = ArrayValue(values=[AnyValue(string_value=v) for v in values])
    return KeyValue(key=key, value=AnyValue(array_value=array))


def attribution_attributes(a: Attribution) -> list[KeyValue]:
    """The attributes describing ``a``, in a stable order, empty values left out."""
    out: list[KeyValue] = []
    if a.user is not None:
        u = a.user
        for key, value in (
            (USER_ID, u.id),
            (USER_EMAIL, u.email),
            (USER_NAME, u.name),
            (USER_TEAM, u.team),
            (ENDUSER_ID, u.key),
        ):
            if value:
                out.append(_text(key, value))
        if u.roles:
            out.append(_texts(USER_ROLES, u.roles))
    out.append(_text(METHOD, a.method))
    out.append(_text(CONFIDENCE, a.confidence))
    if a.candidate_count:
        out.append(KeyValue(key=CANDIDATE_COUNT, value=AnyValue(int_value=a.candidate_count)))
    if a.candidates:
        out.append(_texts(CANDIDATES, (c.email or c.id for c in a.candidates)))
    return out


def encode_attributes(attributes: list[KeyValue]) -> bytes:
    """Encode ``attributes`` as Span field 9 entries.

    Appending these bytes to a serialized span, or passing them to
    ``Span.MergeFromString``, appends the attributes: protobuf merges repeated
    fields by concatenation. That is far cheaper per span than building messages.
    """
    span = Span()
    span.attributes.extend(attributes)
    return span.SerializeToString()


class AttributionEncoder:
    """Memoises the encoded attributes per attribution."""

    __slots__ = ("_by_id", "_cache")

    def __init__(self) -> None:
        self._cache: dict[Attribution, bytes] = {}
        # Spans of a batch share attribution objects; looking those up by
        # identity is far cheaper than hashing the dataclass. The entry keeps its
        # object alive, so its id cannot be reused while it is cached.
        self._by_id: dict[int, tuple[Attribution, bytes]] = {}

    def encoded(self, attribution: Attribution, present: frozenset[str] | None = None) -> bytes:
        """Encoded attributes, leaving out every key already ``present`` on the span."""
        if present:
            kept = [kv for kv in attribution_attributes(attribution) if kv.key not in present]
            return encode_attributes(kept)
        hit = self._by_id.get(id(attribution))
        if hit is not None and hit[0] is attribution:
            return hit[1]
        data = self._cache.get(attribution)
        if data is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            data = self._cache[attribution] = encode_attributes(attribution_attributes(attribution))
        if len(self._by_id) >= _CACHE_LIMIT:
            self._by_id.clear()
        self._by_id[id(attribution)] = (attribution, data)
        return data
