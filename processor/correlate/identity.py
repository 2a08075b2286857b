"""The attributes we write for an attribution, pre-encoded once per attribution (pure)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.model import Attribution, User

USER_ID = "user.id"
USER_EMAIL = "user.email"
USER_NAME = "user.name"
USER_ROLES = "user.roles"
USER_TEAM = "user.team"
USER_HASH = "user.hash"
ENDUSER_ID = "enduser.id"
METHOD = "user.attribution.method"
CONFIDENCE = "user.attribution.confidence"
CANDIDATES = "user.attribution.candidates"
CANDIDATE_COUNT = "user.attribution.candidate_count"
MARGIN = "user.attribution.margin"

WRITTEN_KEYS: tuple[str, ...] = (
    USER_ID,
    USER_EMAIL,
    USER_NAME,
    USER_ROLES,
    USER_TEAM,
    USER_HASH,
    ENDUSER_ID,
    METHOD,
    CONFIDENCE,
    CANDIDATES,
    CANDIDATE_COUNT,
    MARGIN,
)

# Each entry is a few hundred bytes; a directory of this many users fits easily.
_CACHE_LIMIT = 16_384


def _text(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _texts(key: str, values: Iterable[str]) -> KeyValue:
    array = ArrayValue(values=[AnyValue(string_value=v) for v in values])
    return KeyValue(key=key, value=AnyValue(array_value=array))


class EmailHasher:
    """Replaces emails by a keyed hash (identity.hash_emails), for PII-free traces.

    HMAC-SHA-256 of the lower-cased address, hex-encoded and cut to 32 digits
    (128 bits): stable across replicas that share the key, and without the key
    not reversible by hashing a list of guessed addresses.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "EmailHasher(<key redacted>)"

    def __call__(self, email: str) -> str:
        """The hash of ``email``."""
        digest = hmac.new(self._key, email.strip().lower().encode(), hashlib.sha256)
        return digest.hexdigest()[:32]


def attribution_attributes(a: Attribution, hasher: EmailHasher | None = None) -> list[KeyValue]:
    """The attributes describing ``a``, in a stable order, empty values left out.

    With ``hasher``, no email or name is written: ``user.hash`` stands for the
    email, and ``enduser.id`` falls back to the hash for users without an id.
    """
    out: list[KeyValue] = []
    if a.user is not None:
        u = a.user
        digest = hasher(u.email) if hasher is not None and u.email else ""
        for key, value in (
            (USER_ID, u.id),
            (USER_EMAIL, "" if hasher else u.email),
            (USER_HASH, digest),
            (USER_NAME, "" if hasher else u.name),
            (USER_TEAM, u.team),
            (ENDUSER_ID, u.id or digest or u.email),
        ):
            if value:
                out.append(_text(key, value))
        if u.roles:
            out.append(_texts(USER_ROLES, u.roles))
    out.append(_text(METHOD, a.method))
    out.append(_text(CONFIDENCE, a.confidence))
    if a.candidate_count:
        out.append(KeyValue(key=CANDIDATE_COUNT, value=AnyValue(int_value=a.candidate_count)))
    if a.margin:
        out.append(KeyValue(key=MARGIN, value=AnyValue(int_value=a.margin)))
    if a.candidates:
        out.append(_texts(CANDIDATES, (_shown(c, hasher) for c in a.candidates)))
    return out


def _shown(user: User, hasher: EmailHasher | None) -> str:
    if hasher is not None:
        return user.id or hasher(user.email)
    return user.email or user.id


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

    __slots__ = ("_by_id", "_cache", "_hasher")

    def __init__(self, hasher: EmailHasher | None = None) -> None:
        self._hasher = hasher
        self._cache: dict[Attribution, bytes] = {}
        # Spans of a batch share attribution objects; looking those up by
        # identity is far cheaper than hashing the dataclass. The entry keeps its
        # object alive, so its id cannot be reused while it is cached.
        self._by_id: dict[int, tuple[Attribution, bytes]] = {}

    def encoded(self, attribution: Attribution, present: frozenset[str] | None = None) -> bytes:
        """Encoded attributes, leaving out every key already ``present`` on the span."""
        if present:
            kept = [
                kv
                for kv in attribution_attributes(attribution, self._hasher)
                if kv.key not in present
            ]
            return encode_attributes(kept)
        hit = self._by_id.get(id(attribution))
        if hit is not None and hit[0] is attribution:
            return hit[1]
        data = self._cache.get(attribution)
        if data is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            attrs = attribution_attributes(attribution, self._hasher)
            data = self._cache[attribution] = encode_attributes(attrs)
        if len(self._by_id) >= _CACHE_LIMIT:
            self._by_id.clear()
        self._by_id[id(attribution)] = (attribution, data)
        return data
