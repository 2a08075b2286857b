"""Spans leaving the hold: decided together, counted, and sent as one request (pure).

Whatever released them (their deadline, a full buffer, shutdown, or their
trace's identity arriving), the pieces of held groups that leave at one time
are decided as one set of columns (``decide``), their usage is added per
distinct user, each distinct decision is encoded once, and they go out in one
request built from their resource and scope bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from operator import add
from typing import Any

from processor.correlate.decide import Decider, Principals
from processor.correlate.decided import DecisionTable
from processor.correlate.hold import Piece
from processor.correlate.identity import AttributionEncoder
from processor.correlate.outcome import Outcome, Payload
from processor.correlate.resolve import EXACT, Resolver
from processor.correlate.usage_tally import UsageTally
from processor.identity.directory import Directory
from processor.identity.sessions.store import SessionLookup
from processor.identity.sessions.traces import TraceIdentities
from processor.model import Attribution, User
from processor.wire.encoding import Origin, build_request


class Releaser:
    """Turns released pieces into one payload and their counts."""

    def __init__(
        self,
        resolver: Resolver,
        decider: Decider,
        table: DecisionTable,
        encoder: AttributionEncoder,
        traces: TraceIdentities,
        tally: UsageTally | None,
    ) -> None:
        self._resolver = resolver
        self._decider = decider
        self._table = table  # shared with the span walk: one encoding per decision
        self._encoder = encoder
        self._traces = traces
        self._tally = tally

    def release(
        self,
        pieces: Sequence[Piece],
        out: Outcome,
        sessions: SessionLookup,
        directory: Directory,
        *,
        by_trace_only: bool = False,
    ) -> None:
        """Decide ``pieces`` and append their request to ``out.released``.

        ``by_trace_only``: the spans' trace identities are known (an early
        release); nothing else is looked up. Fail open: when deciding raises,
        the spans go out as they came and count as failed.
        """
        pieces = [p for p in pieces if p.indexes]
        if not pieces:
            return
        n = sum(len(p.indexes) for p in pieces)
        try:
            decisions = self._decide(pieces, sessions, directory, by_trace_only)
        except Exception as exc:  # one bad decision must not keep spans back
            decisions = [None] * n
            out.failed += n
            if out.failure is None:
                out.failure = exc
            self._send(pieces, decisions, out, count=False)
            return
        self._send(pieces, decisions, out, count=True)

    def _decide(
        self,
        pieces: list[Piece],
        sessions: SessionLookup,
        directory: Directory,
        by_trace_only: bool,
    ) -> list[Attribution | None]:
        trace_ids = _gather(pieces, "trace_ids")
        n = len(trace_ids)
        decisions: list[Attribution | None] = [None] * n
        trace_map = self._traces.entries
        pending: list[int] | None = None
        if trace_map:
            named = self._resolver.named
            pending = []
            for i, user in enumerate(map(trace_map.get, trace_ids)):
                if user is None:
                    pending.append(i)
                else:
                    decisions[i] = named(user, "trace", EXACT)
        if by_trace_only or pending == []:
            return decisions
        ips: list[str | None] = _gather(pieces, "ips")
        principals: list[Principals] | None = None
        if any(p.group.principals is not None for p in pieces):
            principals = [
                p.group.principals[i] if p.group.principals is not None else ()
                for p in pieces
                for i in p.indexes
            ]
        decided = self._decider.decide(
            ips,
            _gather(pieces, "starts"),
            lambda: _gather(pieces, "models"),
            decisions,
            pending,
            sessions,
            directory,
            principals,
        )
        if decided.by_ip is not None:
            return list(map(decided.by_ip.__getitem__, ips))
        return decisions

    def _send(
        self,
        pieces: list[Piece],
        decisions: list[Attribution | None],
        out: Outcome,
        *,
        count: bool,
    ) -> None:
        """Count, add usage, encode and build the request of the released spans.

        Per span, these are look-ups in the decision table (in C); only the
        decisions new to the table are encoded."""
        table = self._table
        ids = table.ids(decisions)
        if count:
            kinds = table.counts(ids)
            for kind, count_of in kinds.items():
                if kind is None:
                    out.unattributed += count_of
                else:
                    out.attributed[kind] += count_of
            if kinds.get(None):
                ips = _gather(pieces, "ips")
                out.no_address += sum(
                    1 for a, ip in zip(decisions, ips, strict=True) if a is None and ip is None
                )
        if self._tally is not None:
            _add_usage(self._tally, pieces, list(map(table.user.__getitem__, ids)))
        extras = list(map(table.data.__getitem__, ids))
        encode = self._encoder.encoded
        by_origin: dict[int, tuple[Origin, list[bytes]]] = {}

        def slot(origin: Origin) -> list[bytes]:
            found = by_origin.get(id(origin))
            if found is None:
                found = by_origin[id(origin)] = (origin, [])
            return found[1]

        tags: Counter[int] = Counter()
        at = 0
        for group, indexes in pieces:
            k = len(indexes)
            tags[group.tag] += k
            mine = extras[at : at + k]
            present = group.present
            if present is not None:
                for j, (i, a) in enumerate(zip(indexes, decisions[at : at + k], strict=True)):
                    if present[i] and a is not None:
                        mine[j] = encode(a, present[i])
            at += k
            joined = list(map(add, _pick(group.spans, indexes), mine))
            if group.origin is not None:
                slot(group.origin).extend(joined)
            else:
                for i, span in zip(indexes, joined, strict=True):
                    slot(group.origins[i]).append(span)
        merged: dict[Origin, list[bytes]] = {}
        for origin, spans_out in by_origin.values():
            merged.setdefault(origin, []).extend(spans_out)
        out.released.append(Payload(build_request(merged.items()), len(ids), tags))


def _add_usage(tally: UsageTally, pieces: list[Piece], users: list[User | None]) -> None:
    """Add the usage of the released spans; ``users[i]`` is span ``i``'s."""
    at = 0
    for group, indexes in pieces:
        mine = users[at : at + len(indexes)]
        at += len(indexes)
        if group.values is not None:
            tally.add_users(mine, {k: _pick(v, indexes) for k, v in group.values.items()})
        elif group.usages is not None:
            for i, user in zip(indexes, mine, strict=True):
                used = group.usages[i]
                if used is not None:
                    tally.add(user, used)


def _gather(pieces: Sequence[Piece], name: str) -> list[Any]:
    """One column of every piece's spans, in release order."""
    out: list[Any] = []
    for group, indexes in pieces:
        out.extend(_pick(getattr(group, name), indexes))
    return out


def _pick(column: Sequence[Any], indexes: list[int]) -> Sequence[Any]:
    """``column[i]`` for each of ``indexes`` (ascending): a slice when they are a run."""
    if not indexes:
        return []
    first, last = indexes[0], indexes[-1]
    if last - first + 1 == len(indexes):
        return column[first : last + 1]
    return list(map(column.__getitem__, indexes))
