"""Per-user usage rows from span records (pure: records in, a :class:`Report` out).

A span counts as one LLM request when it comes from the queried service, starts
inside the range and carries ``gen_ai.provider.name`` (the same rule as the
usage metrics). Its user is labelled by ``user.email``, else ``user.hash``, else
``user.id``, else ``unknown``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from processor.correlate.identity import METHOD, USER_EMAIL, USER_HASH, USER_ID, USER_TEAM
from processor.correlate.usage import (
    COST,
    INPUT_TOKENS,
    OUTPUT_TOKENS,
    PROVIDER,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    STATUS,
    Price,
)
from processor.correlate.usage_labels import UNKNOWN
from processor.tools.report.spans import SpanRecord
from processor.tools.report.timerange import TimeRange

__all__ = ["TOTAL", "Coverage", "Filters", "Report", "UserRow", "aggregate", "user_label"]

TOTAL = "TOTAL"
CONFIDENCE = "user.attribution.confidence"
NO_METHOD = "none"  # a user on the span, but no user.attribution.method (set upstream)
TOP_MODELS = 3


@dataclass(frozen=True, slots=True)
class Filters:
    """Which users to keep: ``user`` matches email (any case), id or hash; ``team`` exactly."""

    user: str = ""
    team: str = ""

    def matches(self, attributes: Mapping[str, Any]) -> bool:
        """True when the span's user passes both filters."""
        if self.team and _text(attributes.get(USER_TEAM)) != self.team:
            return False
        if not self.user:
            return True
        wanted = self.user.strip()
        return (
            _text(attributes.get(USER_EMAIL)).lower() == wanted.lower()
            or _text(attributes.get(USER_ID)) == wanted
            or _text(attributes.get(USER_HASH)).lower() == wanted.lower()
        )


@dataclass(frozen=True, slots=True)
class UserRow:
    """What one user (or the total) used in the range."""

    user: str
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    errors: int
    top_models: tuple[tuple[str, int], ...]
    providers: tuple[tuple[str, int], ...]
    last_seen_us: int | None


@dataclass(frozen=True, slots=True)
class Coverage:
    """How many requests carry a user, and which method attached it."""

    requests: int
    with_user: int
    by_method: tuple[tuple[str, int], ...]  # attributed requests per user.attribution.method
    ambiguous: int  # requests without a user because several users matched

    @property
    def share(self) -> float:
        """The share of requests with a user, 0..1 (0 when there are none)."""
        return self.with_user / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Report:
    """Rows sorted by cost then requests (both descending), the totals and the coverage."""

    rows: tuple[UserRow, ...]
    totals: UserRow
    coverage: Coverage
    unpriced: int  # requests with tokens but neither a gateway cost nor a price
    unpriced_models: tuple[str, ...]


@dataclass(slots=True)
class _Tally:
    """Running sums of one user."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: int = 0
    models: Counter[str] = field(default_factory=Counter)
    providers: Counter[str] = field(default_factory=Counter)
    last_seen_us: int | None = None

    def add(self, call: _Call, start_us: int) -> None:
        self.requests += 1
        self.input_tokens += call.input_tokens
        self.output_tokens += call.output_tokens
        self.cost_usd += call.cost_usd
        self.errors += call.error
        self.models[call.model] += 1
        self.providers[call.provider] += 1
        if self.last_seen_us is None or start_us > self.last_seen_us:
            self.last_seen_us = start_us

    def row(self, user: str) -> UserRow:
        return UserRow(
            user=user,
            requests=self.requests,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            errors=self.errors,
            top_models=_ranked(self.models, TOP_MODELS),
            providers=_ranked(self.providers, None),
            last_seen_us=self.last_seen_us,
        )


@dataclass(frozen=True, slots=True)
class _Call:
    """The usage of one LLM request."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    priced: bool
    error: bool


def aggregate(
    spans: Iterable[SpanRecord],
    *,
    service: str,
    time_range: TimeRange,
    filters: Filters | None = None,
    prices: Mapping[str, Price] | None = None,
) -> Report:
    """The per-user report of the LLM requests among ``spans``."""
    filters = filters or Filters()
    price_table = {model.lower(): price for model, price in (prices or {}).items()}
    tallies: dict[str, _Tally] = {}
    total = _Tally()
    methods: Counter[str] = Counter()
    ambiguous = 0
    unpriced: Counter[str] = Counter()
    for span in spans:
        attributes = span.attributes
        if not _counts(span, service, time_range) or not filters.matches(attributes):
            continue
        call = _read_call(attributes, price_table)
        label = user_label(attributes)
        tallies.setdefault(label, _Tally()).add(call, span.start_us)
        total.add(call, span.start_us)
        if label != UNKNOWN:
            methods[_text(attributes.get(METHOD)) or NO_METHOD] += 1
        elif _text(attributes.get(CONFIDENCE)) == "ambiguous":
            ambiguous += 1
        if not call.priced and (call.input_tokens or call.output_tokens):
            unpriced[call.model] += 1
    rows = sorted(
        (tally.row(label) for label, tally in tallies.items()),
        key=lambda row: (-row.cost_usd, -row.requests, row.user),
    )
    coverage = Coverage(total.requests, sum(methods.values()), _ranked(methods, None), ambiguous)
    return Report(
        rows=tuple(rows),
        totals=total.row(TOTAL),
        coverage=coverage,
        unpriced=sum(unpriced.values()),
        unpriced_models=tuple(model for model, _ in _ranked(unpriced, None)),
    )


def user_label(attributes: Mapping[str, Any]) -> str:
    """The user a span is counted under: email, else hash, else id, else ``unknown``."""
    for key in (USER_EMAIL, USER_HASH, USER_ID):
        value = _text(attributes.get(key))
        if value:
            return value
    return UNKNOWN


def _counts(span: SpanRecord, service: str, time_range: TimeRange) -> bool:
    """True for an LLM request of ``service`` that started inside ``time_range``."""
    return (
        span.service == service
        and time_range.contains(span.start_us)
        and PROVIDER in span.attributes
    )


def _read_call(attributes: Mapping[str, Any], prices: Mapping[str, Price]) -> _Call:
    """Provider, model, tokens, cost and error of one request."""
    model = _text(attributes.get(RESPONSE_MODEL)) or _text(attributes.get(REQUEST_MODEL))
    model = model or UNKNOWN
    tokens_in = _count(attributes.get(INPUT_TOKENS))
    tokens_out = _count(attributes.get(OUTPUT_TOKENS))
    cost = _number(attributes.get(COST))
    priced = cost is not None
    if cost is None:
        price = prices.get(model.lower())
        priced = price is not None
        cost = _price(price, tokens_in, tokens_out) if price is not None else 0.0
    status = _number(attributes.get(STATUS))
    return _Call(
        provider=_text(attributes.get(PROVIDER)) or UNKNOWN,
        model=model,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=cost,
        priced=priced,
        error=status is not None and status >= 400,
    )


def _price(price: Price, tokens_in: int, tokens_out: int) -> float:
    return (tokens_in * price.input_per_million + tokens_out * price.output_per_million) / 1e6


def _ranked(counter: Counter[str], limit: int | None) -> tuple[tuple[str, int], ...]:
    """Most common first, ties by name."""
    ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return tuple(ordered[:limit] if limit is not None else ordered)


def _text(value: Any) -> str:
    if value is None or isinstance(value, list | dict):
        return ""
    return str(value).strip()


def _number(value: Any) -> float | None:
    """A finite, non-negative number from a number or a numeric string, else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _count(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None else 0
