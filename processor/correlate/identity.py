"""The identity attributes we write, pre-encoded once per user (pure)."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.model import User

USER_ID = "user.id"
USER_EMAIL = "user.email"
USER_NAME = "user.name"
USER_ROLES = "user.roles"
ENDUSER_ID = "enduser.id"
METHOD = "user.attribution.method"
CONFIDENCE = "user.attribution.confidence"

# Keys whose presence means a producer already said who the user is: a span
# carrying any of them is never given a user from a session.
IDENTITY_KEYS: tuple[str, ...] = (USER_ID, USER_EMAIL, USER_NAME, ENDUSER_ID)
WRITTEN_KEYS: tuple[str, ...] = (
    USER_ID,
    USER_EMAIL,
    USER_NAME,
    USER_ROLES,
    ENDUSER_ID,
    METHOD,
    CONFIDENCE,
)

# Each entry is a few hundred bytes; a directory of this many users fits easily.
_CACHE_LIMIT = 16_384


def identity_attributes(user: User, method: str, confidence: str) -> list[KeyValue]:
    """The attributes describing ``user``, in a stable order, empty values left out."""
    out = [
        KeyValue(key=key, value=AnyValue(string_value=value))
        for key, value in (
            (USER_ID, user.id),
            (USER_EMAIL, user.email),
            (USER_NAME, user.name),
            (ENDUSER_ID, user.id or user.email),
        )
        if value
    ]
    if user.roles:
        roles = ArrayValue(values=[AnyValue(string_value=r) for r in user.roles])
        out.append(KeyValue(key=USER_ROLES, value=AnyValue(array_value=roles)))
    out.append(KeyValue(key=METHOD, value=AnyValue(string_value=method)))
    out.append(KeyValue(key=CONFIDENCE, value=AnyValue(string_value=confidence)))
    return out


def encode_attributes(attributes: list[KeyValue]) -> bytes:
    """Encode ``attributes`` as Span field 9 entries, ready for ``Span.MergeFromString``.

    Merging appends to the repeated field, which is far cheaper per span than
    building and copying KeyValue messages.
    """
    span = Span()
    span.attributes.extend(attributes)
    return span.SerializeToString()


class IdentityEncoder:
    """Memoises the encoded identity attributes per (user, method, confidence)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[User, str, str], bytes] = {}

    def encoded(self, user: User, method: str, confidence: str) -> bytes:
        """Encoded attributes for a span that has none of the written keys."""
        key = (user, method, confidence)
        try:
            return self._cache[key]
        except KeyError:
            pass
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        data = self._cache[key] = encode_attributes(identity_attributes(user, method, confidence))
        return data

    def encoded_absent(self, user: User, method: str, confidence: str, present: set[str]) -> bytes:
        """Encoded attributes leaving out every key already ``present`` on the span."""
        attrs = identity_attributes(user, method, confidence)
        return encode_attributes([kv for kv in attrs if kv.key not in present])
