"""LLM usage read off a span: provider, model, tokens, cost, error (pure).

AgentGateway writes ``gen_ai.provider.name``, ``gen_ai.request.model`` /
``gen_ai.response.model``, ``gen_ai.usage.input_tokens`` / ``output_tokens``,
``agw.ai.usage.cost.total`` (USD, when it priced the call) and ``http.status``.
When the gateway did not price a call, a configured price table does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from processor.model import User
from processor.wire.columns import any_value
from processor.wire.memo import Computed

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

    def counts(self, column: Sequence[bytes | None]) -> list[int]:
        """Each encoded value as a token count (0 when it is none)."""
        return list(map(self._counts.__getitem__, column))

    def costs(self, column: Sequence[bytes | None]) -> list[float | None]:
        """Each encoded value as a cost in USD (None: the gateway did not price it)."""
        return list(map(self._costs.__getitem__, column))

    def text(self, encoded: bytes | None) -> str:
        """An encoded value as a label (empty when it is none)."""
        return self._texts[encoded]

    def is_error(self, encoded: bytes | None) -> bool:
        """Whether an encoded HTTP status is an error (>= 400)."""
        return self._errors[encoded]

    def priced(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """The configured price of a call's tokens (0 for a model not in the table)."""
        return self._priced(model, tokens_in, tokens_out)

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
