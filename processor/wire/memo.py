"""A bounded memo that computes on a miss, so a whole column maps in C (pure)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Computed(dict[K, V], Generic[K, V]):
    """``memo[key]`` is ``compute(key)``, computed once and remembered.

    ``list(map(memo.__getitem__, column))`` runs in C for every key seen before
    (``dict.__getitem__`` calls ``__missing__`` only on a miss). Past ``limit``
    entries the memo starts over rather than grow without bound.
    """

    __slots__ = ("_compute", "_limit")

    def __init__(self, compute: Callable[[K], V], limit: int) -> None:
        super().__init__()
        self._compute = compute
        self._limit = limit

    def __missing__(self, key: K) -> V:
        if len(self) >= self._limit:
            self.clear()
        value = self[key] = self._compute(key)
        return value
