"""LLM usage summed across requests, decoded when it is read (pure).

The span path adds each request's usage columns (``UsageReader`` reads them)
keyed by what the spans carry as encoded: the user object, provider, models,
status, and whether the gateway priced the call. Per span that is one dict
update; names are decoded, unpriced calls priced and per-user totals built
only when :meth:`UsageTally.drain` is called (at a metrics scrape, or when the
tally holds ``limit`` distinct rows), once per distinct row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

from processor.correlate.usage import (
    COST,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    PROVIDER,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    STATUS,
    Usage,
    UsageKey,
    UsageReader,
    add_usage,
)
from processor.model import User

DEFAULT_LIMIT = 100_000  # distinct rows before the tally asks to be drained

# (id of the user object (or of None), provider, response model, request model, status, priced)
RawKey = tuple[int, bytes | None, bytes | None, bytes | None, bytes | None, bool]


class UsageTally:
    """Usage of many requests; :meth:`drain` turns it into per-user totals."""

    __slots__ = ("_decoded", "_limit", "_reader", "_rows", "_users")

    def __init__(self, reader: UsageReader, limit: int | None = None) -> None:
        self._reader = reader
        self._limit = limit if limit is not None else DEFAULT_LIMIT
        self._rows: dict[RawKey, list[Any]] = {}  # -> [calls, tokens in, tokens out, cost]
        self._users: dict[int, User | None] = {}  # keeps each keyed user alive
        self._decoded: dict[UsageKey, list[float]] = {}  # calls read one by one

    def __len__(self) -> int:
        return len(self._rows) + len(self._decoded)

    @property
    def full(self) -> bool:
        """Whether the tally holds ``limit`` rows and should be drained."""
        return len(self) >= self._limit

    def add_users(
        self, users: Sequence[User | None], values: Mapping[str, Sequence[bytes | None]]
    ) -> None:
        """Add the usage of every span whose columns are given; span ``i`` is ``users[i]``'s."""
        providers = values[PROVIDER]
        n = len(providers)
        if not n or providers.count(None) == n:
            return
        ids = list(map(id, users))
        self._users.update(zip(ids, users, strict=True))  # kept alive while keyed
        reader = self._reader
        tokens_in = reader.counts(values[INPUT_TOKENS])
        tokens_out = reader.counts(values[OUTPUT_TOKENS])
        cost_column = values[COST]
        if cost_column.count(None) == n:
            costs: Sequence[float] = repeat(0.0, n)  # type: ignore[assignment]
            priced: Any = repeat(False, n)
        else:
            found = reader.costs(cost_column)
            priced = [c is not None for c in found]
            costs = [c if c is not None else 0.0 for c in found]
        keys = zip(
            ids,
            providers,
            values[RESPONSE_MODEL],
            values[REQUEST_MODEL],
            values[STATUS],
            priced,
            strict=False,  # the repeats are as long as the columns
        )
        rows = self._rows
        get = rows.get
        for key, t_in, t_out, cost in zip(keys, tokens_in, tokens_out, costs, strict=False):
            row = get(key)
            if row is None:
                row = rows[key] = [0, 0, 0, 0.0]
            row[0] += 1
            row[1] += t_in
            row[2] += t_out
            row[3] += cost

    def add(self, user: User | None, usage: Usage) -> None:
        """Add one call read in full."""
        add_usage(self._decoded, user, usage)

    def drain(self) -> dict[UsageKey, list[float]]:
        """Per (user, provider, model): [calls, tokens in, tokens out, cost, errors];
        the tally starts over."""
        totals, self._decoded = self._decoded, {}
        rows, self._rows = self._rows, {}
        users, self._users = self._users, {}
        reader = self._reader
        for (who, p, rm, qm, st, priced), (calls, t_in, t_out, cost) in rows.items():
            if p is None:
                continue
            model = reader.text(rm) or reader.text(qm) or "unknown"
            if not priced:
                cost += reader.priced(model, t_in, t_out)
            key = (users[who], reader.text(p) or "unknown", model)
            row = totals.get(key)
            if row is None:
                row = totals[key] = [0, 0, 0, 0.0, 0]
            row[0] += calls
            row[1] += t_in
            row[2] += t_out
            row[3] += cost
            row[4] += calls if reader.is_error(st) else 0
        return totals
