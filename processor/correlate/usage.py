"""LLM usage read off a span: provider, model, tokens, cost, error (pure).

AgentGateway writes ``gen_ai.provider.name``, ``gen_ai.request.model`` /
``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``agw.ai.usage.cost.total`` (USD, when it priced the call) and ``http.status``.
When the gateway did not price a call, a configured price table does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.correlate.columns import any_value
from processor.correlate.memo import Computed
from processor.model import User

PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
COST = "agw.ai.usage.cost.total"
STATUS = "http.status"
_KEYS = (PROVIDER, RESPONSE_MODEL, REQUEST_MODEL, INPUT_TOKENS, OUTPUT_TOKENS, COST, STATUS)
USAGE_KEYS = _KEYS
_MAX_LABEL = 64  # provider and model names become metric labels
_MEMO_LIMIT = 65_536  # distinct encoded values remembered per kind
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million input and output tokens."""

    input_per_million: float
    output_per_million: float


class Usage(NamedTuple):
    """What one LLM call used."""

    provider: str
    model: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    error: bool


# (user or None, provider, model) -> [requests, tokens in, tokens out, cost, errors]
UsageKey = tuple[User | None, str, str]


def add_usage(totals: dict[UsageKey, list[float]], user: User | None, usage: Usage) -> None:
    """Add one call to ``totals``."""
    row = totals.get((user, usage.provider, usage.model))
    if row is None:
        row = totals[(user, usage.provider, usage.model)] = [0, 0, 0, 0.0, 0]
    row[0] += 1
    row[1] += usage.tokens_in
    row[2] += usage.tokens_out
    row[3] += usage.cost_usd
    row[4] += usage.error


class UsageReader:
    """Reads :class:`Usage` from span attributes; one instance serves every request.

    Gateways write their attributes in a fixed order, so the position where each
    key was found last time is tried first: a handful of indexed reads instead of
    a walk over every attribute (each access costs a wrapper object in Python).
    A miss re-learns every position with one walk; the result never depends on
    the guess.
    """

    __slots__ = (
        "_absent",
        "_costs",
        "_counts",
        "_errors",
        "_live",
        "_pos",
        "_prices",
        "_raw",
        "_slots",
        "_texts",
    )

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices = {k.lower(): v for k, v in (prices or {}).items()}
        self._slots = {key: i for i, key in enumerate(_KEYS)}
        self._pos = [0] * len(_KEYS)
        self._raw: bytes | None = None  # None: not told, so every key may be there
        self._absent: dict[str, bool] = {}
        # (slot, key) of the keys that may occur in the current request.
        self._live = list(enumerate(_KEYS))
        # Encoded column value (None: the span has no such attribute) -> what it says.
        self._texts: Computed[bytes | None, str] = Computed(_reading(_text), _MEMO_LIMIT)
        self._counts: Computed[bytes | None, int] = Computed(_reading(_int), _MEMO_LIMIT)
        self._costs: Computed[bytes | None, float | None] = Computed(_reading(_float), _MEMO_LIMIT)
        self._errors: Computed[bytes | None, bool] = Computed(self._is_error, _MEMO_LIMIT)

    def begin(self, raw: bytes) -> None:
        """Start a request: ``raw`` is searched (once per key, lazily) for keys that no
        span at a remembered position had, to tell an absent key from a moved one."""
        self._raw = raw
        self._absent = {}
        self._live = list(enumerate(_KEYS))

    def read(self, attributes: Sequence[KeyValue]) -> Usage | None:
        """The call's usage, or None for a span that is not an LLM call.

        Call :meth:`begin` with the request's bytes first.
        """
        values = self._guess(attributes)
        if values is None:
            values = self._walk(attributes)
        if values[0] is None:
            return None
        provider = _text(values[0]) or "unknown"
        model = _text(values[1]) or _text(values[2]) or "unknown"
        tokens_in, tokens_out = _int(values[3]), _int(values[4])
        cost = _float(values[5])
        if cost is None:
            cost = self._priced(model, tokens_in, tokens_out)
        return Usage(provider, model, tokens_in, tokens_out, cost, _int(values[6]) >= 400)

    def _guess(self, attributes: Sequence[KeyValue]) -> list[AnyValue | None] | None:
        """Values at the remembered positions, or None when any position is stale.

        A key missing at its position is looked for in the request's bytes; when
        it occurs nowhere it is dropped from the keys read for the rest of the
        request (the cost key, say, on calls the gateway did not price).
        """
        values: list[AnyValue | None] = [None] * len(_KEYS)
        pos = self._pos
        try:
            for slot, key in self._live:
                kv = attributes[pos[slot]]
                if kv.key == key:
                    values[slot] = kv.value
                elif not self._nowhere(key):
                    return None
        except IndexError:
            return None
        if len(self._live) != len(_KEYS) - sum(self._absent.values()):
            self._live = [(i, k) for i, k in enumerate(_KEYS) if not self._absent.get(k)]
        return values

    def _nowhere(self, key: str) -> bool:
        """True when ``key`` occurs nowhere in the current request's bytes."""
        absent = self._absent.get(key)
        if absent is None:
            absent = self._absent[key] = self._raw is not None and key.encode() not in self._raw
        return absent

    def _walk(self, attributes: Sequence[KeyValue]) -> list[AnyValue | None]:
        values: list[AnyValue | None] = [None] * len(_KEYS)
        slots = self._slots
        for index, kv in enumerate(attributes):
            slot = slots.get(kv.key)
            if slot is not None:
                values[slot] = kv.value
                self._pos[slot] = index
        return values

    # ------------------------------------------------------------ encoded columns
    # The same answers as :meth:`read`, from the encoded AnyValue of each key
    # (see ``columns``); each distinct encoding is decoded once.

    def add_columns(
        self,
        totals: dict[UsageKey, list[float]],
        owners: Sequence[Hashable],
        users: Mapping[Hashable, User | None],
        values: Mapping[str, Sequence[bytes | None]],
    ) -> None:
        """Add the usage of every span whose columns are given to ``totals``.

        ``owners[i]`` stands for the user of span ``i``, ``users[owners[i]]``.

        Spans are grouped by user and by the encoded names and status that vary
        within the batch; one loop sums each group's calls, tokens and cost, and
        names are decoded once per group.
        """
        providers = values[PROVIDER]
        n = len(providers)
        if providers.count(None) == n:
            return
        # Group by user and the encoded names and status; a column with one value
        # throughout (most are) is left out of the key and read once.
        named = [values[k] for k in (PROVIDER, RESPONSE_MODEL, REQUEST_MODEL, STATUS)]
        varying = [j for j, c in enumerate(named) if c.count(c[0]) != n]
        count = self._counts.__getitem__
        tokens_in = list(map(count, values[INPUT_TOKENS]))
        tokens_out = list(map(count, values[OUTPUT_TOKENS]))
        cost_column = values[COST]
        costs: list[Any] | None = None
        if cost_column.count(None) != n:
            costs = list(map(self._costs.__getitem__, cost_column))
            if None in costs:  # some calls unpriced by the gateway: price them one by one
                self._add_spans(totals, [users[o] for o in owners], values)
                return
        keys = zip(owners, *(named[j] for j in varying), strict=True)
        rows: dict[Any, list[Any]] = {}  # key -> [calls, tokens in, tokens out, cost]
        get = rows.get
        for key, t_in, t_out in zip(keys, tokens_in, tokens_out, strict=True):
            row = get(key)
            if row is None:
                row = rows[key] = [0, 0, 0, 0.0]
            row[0] += 1
            row[1] += t_in
            row[2] += t_out
        if costs is not None:
            keys = zip(owners, *(named[j] for j in varying), strict=True)
            for key, cost in zip(keys, costs, strict=True):
                rows[key][3] += cost
        text, error = self._texts.__getitem__, self._errors.__getitem__
        for key, (calls, t_in, t_out, summed) in rows.items():
            names = [column[0] for column in named]
            for j, value in zip(varying, key[1:], strict=True):
                names[j] = value
            p, rm, qm, st = names
            if p is None:
                continue
            model = text(rm) or text(qm) or "unknown"
            cost = summed if costs is not None else self._priced(model, t_in, t_out)
            row_key = (users[key[0]], text(p) or "unknown", model)
            row = totals.get(row_key)
            if row is None:
                row = totals[row_key] = [0, 0, 0, 0.0, 0]
            row[0] += calls
            row[1] += t_in
            row[2] += t_out
            row[3] += cost
            row[4] += calls if error(st) else 0

    def _add_spans(
        self,
        totals: dict[UsageKey, list[float]],
        users: Sequence[User | None],
        values: Mapping[str, Sequence[bytes | None]],
    ) -> None:
        for user, used in zip(users, self.usages(values, range(len(users))), strict=True):
            if used is not None:
                add_usage(totals, user, used)

    def usages(
        self, values: Mapping[str, Sequence[bytes | None]], indexes: Sequence[int]
    ) -> list[Usage | None]:
        """What each span of ``indexes`` used (None: not an LLM call), as :meth:`read`
        gives it; each column maps through a memo of decoded values."""
        named, tokens = self._texts.__getitem__, self._counts.__getitem__
        columns = [[values[key][i] for i in indexes] for key in _KEYS]
        p, rm, qm, ti, to, c, st = columns
        out: list[Usage | None] = []
        new = tuple.__new__
        for provider, text, m1, m2, t_in, t_out, cost, error in zip(
            p,
            map(named, p),
            map(named, rm),
            map(named, qm),
            map(tokens, ti),
            map(tokens, to),
            map(self._costs.__getitem__, c),
            map(self._errors.__getitem__, st),
            strict=True,
        ):
            if provider is None:
                out.append(None)
                continue
            model = m1 or m2 or "unknown"
            if cost is None:
                cost = self._priced(model, t_in, t_out)
            out.append(new(Usage, (text or "unknown", model, t_in, t_out, cost, error)))
        return out

    def _is_error(self, encoded: bytes | None) -> bool:
        return encoded is not None and self._counts[encoded] >= 400

    def _priced(self, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self._prices.get(model.lower())
        if price is None:
            return 0.0
        return (tokens_in * price.input_per_million + tokens_out * price.output_per_million) / 1e6


def _reading(read: Callable[[AnyValue | None], _T]) -> Callable[[bytes | None], _T]:
    """``read`` of an encoded column value."""
    return lambda encoded: read(any_value(encoded))


def _text(value: AnyValue | None) -> str:
    return value.string_value[:_MAX_LABEL] if value is not None else ""


def _int(value: AnyValue | None) -> int:
    if value is None:
        return 0
    fast = value.int_value  # how gateways write counts; 0 may mean another type
    if fast > 0:
        return fast
    if value.HasField("int_value"):
        return max(value.int_value, 0)
    if value.HasField("double_value"):
        return max(int(value.double_value), 0)
    try:
        return max(int(value.string_value), 0)
    except ValueError:
        return 0


def _float(value: AnyValue | None) -> float | None:
    if value is None:
        return None
    if value.HasField("double_value"):
        return max(value.double_value, 0.0)
    if value.HasField("int_value"):
        return float(max(value.int_value, 0))
    try:
        return max(float(value.string_value), 0.0)
    except ValueError:
        return None
