"""Identity, keys already written, and principals, read from a request's columns (pure).

Each is a handful of attribute keys; most batches carry none of them, which one
count per key proves. When some do, every span's encoded values for those keys
form a signature, and each distinct signature is decoded once (Open WebUI sends
the same user headers on every call of a user).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from processor.correlate.identity import WRITTEN_KEYS
from processor.correlate.span_identity import IdentityReader
from processor.model import User
from processor.wire.columns import Columns, any_value
from processor.wire.memo import Computed

Principals = tuple[tuple[str, str], ...]
_MEMO_LIMIT = 65_536
Signature = tuple[tuple[str, ...], tuple[bytes | None, ...]]


class ColumnFacts:
    """Reads per-span identity, present written keys and principals from columns."""

    def __init__(self, reader: IdentityReader, principal_keys: Sequence[str]) -> None:
        self._reader = reader
        self.identity_keys = tuple(sorted(reader.identity_keys))
        self.written_keys = tuple(WRITTEN_KEYS)
        self.principal_keys = tuple(principal_keys)
        self._users: Computed[Signature, User | None] = Computed(self._user, _MEMO_LIMIT)
        self._present: Computed[Signature, frozenset[str] | None] = Computed(_present, _MEMO_LIMIT)
        self._principals: Computed[Signature, Principals] = Computed(_principals, _MEMO_LIMIT)

    @property
    def wanted(self) -> tuple[str, ...]:
        """Every key these facts are read from."""
        return (*self.identity_keys, *self.written_keys, *self.principal_keys)

    def users(self, columns: Columns, n: int) -> list[User | None] | None:
        """Each span's own identity; None when no span carries an identity key."""
        return _by_signature(columns, n, self.identity_keys, self._users)

    def present(self, columns: Columns, n: int) -> list[frozenset[str] | None] | None:
        """The keys we write that each span already has; None when no span has one."""
        return _by_signature(columns, n, self.written_keys, self._present)

    def principals(self, columns: Columns, n: int) -> list[Principals] | None:
        """Each span's (key, value) principals; None when no span carries one."""
        return _by_signature(columns, n, self.principal_keys, self._principals)

    def _user(self, signature: Signature) -> User | None:
        keys, values = signature
        attributes = [
            KeyValue(key=key, value=any_value(value))
            for key, value in zip(keys, values, strict=True)
            if value is not None
        ]
        return self._reader.read(attributes) if attributes else None


def _by_signature(
    columns: Columns, n: int, keys: tuple[str, ...], memo: Computed[Signature, Any]
) -> list[Any] | None:
    """``memo[(keys present, span's values)]`` per span, or None when no span has any key."""
    values = columns.values
    present = tuple(k for k in keys if values[k].count(None) != n)
    if not present:
        return None
    rows = zip(*(values[k] for k in present), strict=True)
    return list(map(memo.__getitem__, zip(repeat(present, n), rows, strict=True)))


def _present(signature: Signature) -> frozenset[str] | None:
    keys, values = signature
    found = frozenset(k for k, v in zip(keys, values, strict=True) if v is not None)
    return found or None


def _principals(signature: Signature) -> Principals:
    keys, values = signature
    out = []
    for key, value in zip(keys, values, strict=True):
        text = any_value(value)
        if text is not None and text.string_value:
            out.append((key, text.string_value))
    return tuple(out)
