"""Reading identity a producer already put on a span or its resource (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import unquote

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.correlate.identity import WRITTEN_KEYS
from processor.model import User

# Attribute key -> the user field it carries, in order of precedence: when two
# keys give the same field, the earlier one wins.
BUILTIN_IDENTITY_KEYS: tuple[tuple[str, str], ...] = (
    ("user.id", "id"),
    ("user.email", "email"),
    ("user.name", "name"),
    ("user.full_name", "name"),
    ("user.roles", "role"),
    ("enduser.id", "id"),
    # Open WebUI's own server spans (ENABLE_OTEL).
    ("client.user.id", "id"),
    ("client.user.email", "email"),
    ("client.user.name", "name"),
    ("client.user.role", "role"),
    # ENABLE_FORWARD_USER_INFO_HEADERS, captured as headers or copied by a CEL rule.
    ("http.request.header.x-openwebui-user-id", "id"),
    ("http.request.header.x-openwebui-user-email", "email"),
    ("http.request.header.x-openwebui-user-name", "name"),
    ("http.request.header.x-openwebui-user-role", "role"),
    ("x-openwebui-user-id", "id"),
    ("x-openwebui-user-email", "email"),
    ("x-openwebui-user-name", "name"),
    ("x-openwebui-user-role", "role"),
)
# Open WebUI URL-encodes the user name header (it may hold any Unicode).
_URL_ENCODED = frozenset(k for k, _ in BUILTIN_IDENTITY_KEYS if k.endswith("x-openwebui-user-name"))
_MAX_VALUE = 256  # longer "identities" are ignored rather than copied around


def _first_text(value: AnyValue) -> str:
    """A string value, or the first string of an array (captured headers are arrays)."""
    if value.HasField("array_value"):
        for item in value.array_value.values:
            if item.string_value:
                return item.string_value
        return ""
    return value.string_value


def _all_texts(value: AnyValue) -> tuple[str, ...]:
    if value.HasField("array_value"):
        return tuple(v.string_value for v in value.array_value.values if v.string_value)
    return (value.string_value,) if value.string_value else ()


class IdentityReader:
    """Finds producer-set identity; built once from the configured extra keys."""

    def __init__(self, extra: Mapping[str, str] | None = None) -> None:
        pairs = list(BUILTIN_IDENTITY_KEYS) + [
            (k, v) for k, v in (extra or {}).items() if k not in dict(BUILTIN_IDENTITY_KEYS)
        ]
        self._rank = {key: (i, field) for i, (key, field) in enumerate(pairs)}
        # Every built-in key, and every key the service writes, contains "user";
        # configured keys that do not are searched for as they are.
        others = sorted({k.encode() for k, _ in pairs if "user" not in k})
        self._needles = (b"user", *others)
        self.identity_keys = frozenset(self._rank)
        # Keys whose presence the message path scans spans for: identity, and ours.
        self.keys = self.identity_keys.union(WRITTEN_KEYS)

    def maybe_present(self, raw: bytes) -> bool:
        """False only when no identity key, and no key the service writes, can be in ``raw``.

        A key's bytes appear verbatim in the encoded request whatever the
        encoder did with tags and lengths, so their absence proves that no
        span or resource carries the key and the per-span scan can be skipped.
        """
        return any(needle in raw for needle in self._needles)

    def read(self, attributes: Sequence[KeyValue]) -> User | None:
        """The identity in ``attributes``, or None when it names neither id nor email."""
        found: dict[str, tuple[int, AnyValue, str]] = {}
        for kv in attributes:
            hit = self._rank.get(kv.key)
            if hit is not None and (hit[1] not in found or hit[0] < found[hit[1]][0]):
                found[hit[1]] = (hit[0], kv.value, kv.key)
        if not found:
            return None
        fields = {field: self._text(value, key) for field, (_, value, key) in found.items()}
        if not fields.get("id") and not fields.get("email"):
            return None
        roles = _all_texts(found["role"][1]) if "role" in found else ()
        return User(
            id=fields.get("id", ""),
            email=fields.get("email", ""),
            name=fields.get("name", ""),
            roles=tuple(r[:_MAX_VALUE] for r in roles),
        )

    @staticmethod
    def _text(value: AnyValue, key: str) -> str:
        text = _first_text(value)
        if key in _URL_ENCODED:
            text = unquote(text)
        return text.strip()[:_MAX_VALUE]
