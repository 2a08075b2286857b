"""The span walk over columns: a whole request attributed without decoding its spans.

This is the correlator's path for requests that carry no identity of their own
(gateway batches): every span's trace id, start time, address, model and usage
come from :mod:`processor.wire.columns`, decisions are shared across the
batch wherever they provably coincide, and the output is the received bytes
with the encoded attribution appended to each span (the protobuf encoder then
fixes the length prefixes). The per-span Python work is a few list and dict
operations; everything else runs in C. It gives the same attributions, counts
and payload contents as the message path in ``correlator``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import compress, repeat
from operator import is_
from typing import Any

from processor.correlate.column_facts import ColumnFacts, Principals
from processor.correlate.decide import Decider
from processor.correlate.decided import DecisionTable, Kind
from processor.correlate.find import AttributeFinder
from processor.correlate.hold import HeldGroup
from processor.correlate.outcome import Outcome, Payload
from processor.correlate.parts import SpanPathParts
from processor.correlate.resolve import EXACT
from processor.correlate.usage import USAGE_KEYS
from processor.identity.directory import Directory
from processor.identity.sessions.store import SessionLookup
from processor.model import Attribution, User, unset
from processor.wire.columns import Columns, any_value
from processor.wire.memo import Computed
from processor.wire.received import Received
from processor.wire.splice import origins, rewrite, splice

_MEMO_LIMIT = 65_536


class _Absent:
    """No usable string under this key: try the next key, then the resource."""


_ABSENT: Any = _Absent()
_NOT_IP: Any = object()  # a string that is not an address: the span has no address


class BatchPath:
    """Attributes a :class:`Received` request from its columns, for one correlator."""

    def __init__(
        self, parts: SpanPathParts, decider: Decider, facts: ColumnFacts, table: DecisionTable
    ) -> None:
        rules = parts.rules
        self._rules = rules
        self._decider = decider
        self._usage_tally = parts.tally
        self._traces = parts.traces
        self._normalize = parts.normalize
        self._encoder = parts.encoder
        self._hold_group = parts.hold
        self._named = parts.resolver.named
        self._named_all = parts.resolver.named_all
        self._facts = facts
        self._decided = table
        self._identity = parts.identity
        self._on_learned = parts.learned
        self._find_resource_addr = AttributeFinder(rules.address_keys).find
        # encoded AnyValue -> normalised address, _NOT_IP or _ABSENT
        self._addresses: Computed[bytes | None, Any] = Computed(self._address, _MEMO_LIMIT)
        self._texts: Computed[bytes | None, str] = Computed(_string, _MEMO_LIMIT)

    def receive(
        self,
        received: Received,
        columns: Columns,
        now_ns: int,
        tag: int,
        out: Outcome,
        sessions: SessionLookup,
        directory: Directory,
    ) -> Outcome:
        """Attribute or hold every span; fills ``out`` as the message path does."""
        n = received.spans
        if not n:
            return out
        out.spans = n
        ips, per_ip = self._addresses_of(received, columns)
        starts = columns.starts
        decisions: list[Attribution | None] = [None] * n
        learned = self._identified(received, columns, now_ns, decisions)
        pending = self._by_trace(columns, decisions, learned is not None)
        held: list[int] = []
        if self._rules.hold_ns > 0:
            held, pending = list(range(n)) if pending is None else pending, []
        principals = self._facts.principals(columns, n) if directory.has_principals else None
        present = self._facts.present(columns, n)
        if len(held) == n:  # every span waits (none names its user): nothing to decide now
            self._hold(received, columns, held, ips, None, principals, present, now_ns, tag, out)
            return out
        models: list[str] | None = None

        def models_of() -> list[str]:
            nonlocal models
            if models is None:
                models = self._models_of(columns.values, len(columns.starts))
            return models

        decided = self._decider.decide(
            ips, starts, models_of, decisions, pending, sessions, directory, principals, per_ip
        )
        # Each span's decision object, known to the table by id: counting, usage and
        # the encoded attributes are then per-span look-ups in C.
        by_ip, table = decided.by_ip, self._decided
        kinds: Counter[Kind]
        if by_ip is not None and len(by_ip) * 8 <= n:  # few addresses: counted per address
            id_of = dict(zip(by_ip, table.ids(list(by_ip.values())), strict=True))
            ids = list(map(id_of.__getitem__, ips))
            kinds = Counter()
            for ip, count in per_ip.items():
                kinds[table.kind[id_of[ip]]] += count
        else:
            ids = table.ids(decisions if by_ip is None else list(map(by_ip.__getitem__, ips)))
            kinds = table.counts(ids)
        for kind, count in kinds.items():
            if kind is None:
                out.unattributed += count - len(held)
            else:
                out.attributed[kind] += count
        out.no_address += decided.no_address
        tally = self._usage_tally
        if tally is not None and len(held) < n:
            users = list(map(table.user.__getitem__, ids))
            if held:
                skip = set(held)
                keep = [i for i in range(n) if i not in skip]
                values = {k: [columns.values[k][i] for i in keep] for k in USAGE_KEYS}
                tally.add_users([users[i] for i in keep], values)
            else:
                tally.add_users(users, columns.values)
        if held:
            self._hold(received, columns, held, ips, models, principals, present, now_ns, tag, out)
        if n > len(held):
            extras = list(map(table.data.__getitem__, ids))
            if present is not None:  # leave out what a span already says
                encode = self._encoder.encoded
                for i, (a, has) in enumerate(zip(decisions, present, strict=True)):
                    if has and a is not None:
                        extras[i] = encode(a, has)
            if held or any(extras):
                data = (None if held else splice(received, extras)) or rewrite(
                    received.view, extras, set(held)
                )
            else:
                data = received.raw
            out.current = Payload(data, n - len(held), Counter({tag: 1}))
        if learned:
            self._on_learned(learned, out)
        return out

    def _by_trace(
        self, columns: Columns, decisions: list[Attribution | None], identified: bool
    ) -> list[int] | None:
        """Name the undecided spans of traces already known; returns the spans still
        undecided (None: every span). Spans named by their own identity are not
        looked up: their traces were just learned."""
        n = len(decisions)
        trace_map = self._traces.entries
        if identified:
            pending = list(compress(range(n), map(is_, decisions, repeat(None))))
            if not pending or not trace_map:
                return pending
            ids = columns.trace_ids
            traced = [trace_map.get(ids[i]) for i in pending]
        else:
            if not trace_map:
                return None
            traced = list(map(trace_map.get, columns.trace_ids))
            if unset(traced) == n:
                return None  # no span of a known trace
            pending = list(range(n))
        named = self._named
        undecided: list[int] = []
        for i, user in zip(pending, traced, strict=True):
            if user is None:
                undecided.append(i)
            else:
                decisions[i] = named(user, "trace", EXACT)
        return undecided

    def _identified(
        self,
        received: Received,
        columns: Columns,
        now_ns: int,
        decisions: list[Attribution | None],
    ) -> dict[bytes, User] | None:
        """Name the spans that carry identity (their own, else their resource's) and
        learn their traces; returns the traces newly learned (None: no identity)."""
        n = received.spans
        users = self._facts.users(columns, n)
        resources = self._resource_users(received)
        if resources is not None:
            users = [u or r for u, r in zip(users or repeat(None, n), resources, strict=False)]
        if users is None:
            return None
        # One Attribution per user object, its spans' decision; the spans without
        # identity keep theirs (every decision is still None here).
        decisions[:] = self._named_all(users, "span", EXACT)
        return self._traces.learn(columns.trace_ids, users, now_ns)

    def _resource_users(self, received: Received) -> list[User | None] | None:
        """Each span's resource identity; None when no resource carries one."""
        keys = self._identity.identity_keys
        found: list[User | None] = []
        any_user = False
        for rs, frame in zip(received.view.resource_spans, received.frames(), strict=True):
            attrs = frame.decoded.attributes
            user = self._identity.read(attrs) if any(kv.key in keys for kv in attrs) else None
            any_user = any_user or user is not None
            found.extend(repeat(user, sum(len(ss.spans) for ss in rs.scope_spans)))
        return found if any_user else None

    # ------------------------------------------------------------------ per column

    def _addresses_of(
        self, received: Received, columns: Columns
    ) -> tuple[list[str | None], Counter[str | None]]:
        """Each span's normalised source address (the first configured key with a
        non-empty string, else its resource's address), and how many spans have each."""
        n = received.spans
        found: list[Any] | None = None
        for key in self._rules.address_keys:
            column = columns.values[key]
            if column.count(None) == n:
                continue
            decoded = list(map(self._addresses.__getitem__, column))
            if found is None:
                found = decoded
            else:
                found = [d if f is _ABSENT else f for f, d in zip(found, decoded, strict=True)]
            kinds = Counter(found)
            if _ABSENT not in kinds:
                break
        else:
            if found is None:
                found = [_ABSENT] * n
            found = self._resource_fallback(received, found)
            kinds = Counter(found)
        if _NOT_IP in kinds:
            found = [None if f is _NOT_IP else f for f in found]
            kinds = Counter(found)
        return found, kinds

    def _address(self, encoded: bytes | None) -> Any:
        """The memo entry for an encoded value (None: no such attribute): the
        address, _NOT_IP or _ABSENT."""
        text = _string(encoded)
        return (self._normalize(text) or _NOT_IP) if text else _ABSENT

    def _resource_fallback(self, received: Received, found: list[Any]) -> list[str | None]:
        out: list[str | None] = []
        at = 0
        for rs, frame in zip(received.view.resource_spans, received.frames(), strict=True):
            count = sum(len(ss.spans) for ss in rs.scope_spans)
            raw_addr = self._find_resource_addr(frame.decoded.attributes)
            ip = self._normalize(raw_addr) if raw_addr else None
            out.extend(ip if f is _ABSENT else f for f in found[at : at + count])
            at += count
        return out

    def _models_of(self, values: Mapping[str, Sequence[bytes | None]], n: int) -> list[str]:
        """Each span's model: the first configured key with a non-empty string."""
        models = [""] * n
        for key in reversed(self._rules.model_keys):  # earlier keys overwrite later ones
            column = values[key]
            if column.count(None) == n:
                continue
            text = self._texts.__getitem__
            models = [text(v) or m for v, m in zip(column, models, strict=True)]
        return models

    def _hold(
        self,
        received: Received,
        columns: Columns,
        held: list[int],
        ips: list[str | None],
        models: list[str] | None,  # None: not read yet
        principals: list[Principals] | None,
        present: list[frozenset[str] | None] | None,
        now_ns: int,
        tag: int,
        out: Outcome,
    ) -> None:
        """Hold the spans of ``held`` as one group. Their models are read at release,
        if request events need them, from the model columns kept."""
        spans, where = received.span_bytes(), origins(received)
        trace_ids, starts, values = columns.trace_ids, columns.starts, columns.values
        everything = len(held) == len(spans)
        held_models: list[str] | Callable[[], list[str]]
        if models is not None:
            held_models = models if everything else [models[i] for i in held]
        else:
            kept = {
                k: values[k] if everything else [values[k][i] for i in held]
                for k in self._rules.model_keys
            }
            held_models = partial(self._models_of, kept, len(held))
        if everything:
            group = HeldGroup(
                spans,
                where,
                trace_ids,
                ips,
                starts,
                held_models,
                now_ns + self._rules.hold_ns,
                tag,
                values=(
                    {k: values[k] for k in USAGE_KEYS} if self._usage_tally is not None else None
                ),
                principals=principals,
                present=present,
            )
        else:
            pick = held.__iter__
            group = HeldGroup(
                [spans[i] for i in pick()],
                [where[i] for i in pick()],
                [trace_ids[i] for i in pick()],
                [ips[i] for i in pick()],
                [starts[i] for i in pick()],
                held_models,
                now_ns + self._rules.hold_ns,
                tag,
                values={k: [values[k][i] for i in pick()] for k in USAGE_KEYS}
                if self._usage_tally is not None
                else None,
                principals=None if principals is None else [principals[i] for i in pick()],
                present=None if present is None else [present[i] for i in pick()],
            )
        self._hold_group(group, out)


def _string(encoded: bytes | None) -> str:
    value = any_value(encoded)
    return value.string_value if value is not None else ""
