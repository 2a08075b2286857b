"""What each decision object means for the output, kept by object id (pure).

The resolver shares one ``Attribution`` object per user and method across
requests, so a busy batch holds many spans of few decisions, and consecutive
batches the same decisions again. For each object this table keeps its encoded
attributes, how it is counted, and its user; per span the lookups then run in C.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from processor.correlate.identity import AttributionEncoder
from processor.model import Attribution, User

_LIMIT = 65_536  # decision objects remembered (each entry keeps its object alive)
Kind = tuple[str, str] | None  # (method, confidence); None: no decision


class DecisionTable:
    """Per decision object (by id): encoded attributes, kind, user."""

    __slots__ = ("_encoder", "_objects", "data", "kind", "user")

    def __init__(self, encoder: AttributionEncoder) -> None:
        self._encoder = encoder
        self._objects: dict[int, Attribution | None] = {}
        self.data: dict[int, bytes] = {}
        self.kind: dict[int, Kind] = {}
        self.user: dict[int, User | None] = {}
        self._forget()

    def ids(self, decisions: Sequence[Attribution | None]) -> list[int]:
        """Each decision's id, every one of them known to the table."""
        ids = list(map(id, decisions))
        if not all(map(self._objects.__contains__, ids)):
            self._learn(decisions)
        return ids

    def counts(self, ids: Iterable[int]) -> Counter[Kind]:
        """How many of ``ids`` count each way."""
        return Counter(map(self.kind.__getitem__, ids))

    def _learn(self, decisions: Iterable[Attribution | None]) -> None:
        if len(self._objects) >= _LIMIT:
            self._forget()
        objects = self._objects
        for a in decisions:
            key = id(a)
            if key in objects or a is None:
                continue
            objects[key] = a
            self.data[key] = self._encoder.encoded(a)
            self.kind[key] = (a.method, a.confidence)
            self.user[key] = a.user

    def _forget(self) -> None:
        for table in (self._objects, self.data, self.kind, self.user):
            table.clear()
        self._objects[id(None)] = None
        self.data[id(None)] = b""
        self.kind[id(None)] = None
        self.user[id(None)] = None
