"""The attribution chain over whole requests: span -> trace -> session -> directory.

Pure and synchronous: the caller passes the time in and sends the payloads it
gets back. Spans without exact identity are held (as bytes) for a while, so that
identity arriving after them, from another span of their trace or from a
request event, can still attribute them.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, MutableSequence, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from processor.correlate.address import AddressNormalizer
from processor.correlate.batch import BatchPath
from processor.correlate.column_facts import ColumnFacts
from processor.correlate.columns import ColumnReader, Columns
from processor.correlate.decide import Decider
from processor.correlate.find import AttributeFinder
from processor.correlate.hold import HeldGroup, HoldBuffer, Piece
from processor.correlate.identity import WRITTEN_KEYS, AttributionEncoder
from processor.correlate.lag import LagLearner
from processor.correlate.outcome import CorrelationFailed, Outcome, Payload, Rules
from processor.correlate.received import Received
from processor.correlate.release import Releaser
from processor.correlate.resolve import EXACT, Memo, Resolver, SpanFacts
from processor.correlate.span_identity import IdentityReader
from processor.correlate.usage import PROVIDER, USAGE_KEYS, Usage, UsageKey, UsageReader
from processor.correlate.usage_tally import UsageTally
from processor.correlate.wire import Origin
from processor.directory import Directory
from processor.model import Attribution, Session, User
from processor.sessions.store import SessionLookup
from processor.sessions.traces import TraceIdentities

__all__ = ["CorrelationFailed", "Correlator", "Outcome", "Payload", "Rules"]

_WRITTEN = frozenset(WRITTEN_KEYS)
_LLM_MARK = PROVIDER.encode()


class _Holding:
    """The spans the message path holds from one request, gathered into one group."""

    def __init__(self) -> None:
        self.spans: list[bytes] = []
        self.origins: list[Origin] = []
        self.trace_ids: list[bytes] = []
        self.facts: list[SpanFacts] = []
        self.present: list[frozenset[str] | None] = []
        self.usages: list[Usage | None] = []

    def group(self, deadline_ns: int, tag: int) -> HeldGroup:
        facts = self.facts
        return HeldGroup(
            self.spans,
            self.origins,
            self.trace_ids,
            [f.ip for f in facts],
            [f.start_ns for f in facts],
            [f.model for f in facts],
            deadline_ns,
            tag,
            usages=self.usages,
            principals=[f.principals for f in facts],
            present=self.present,
        )


class Correlator:
    """Owns held spans and trace identities; sessions and the directory are injected."""

    def __init__(
        self,
        rules: Rules,
        resolver: Resolver,
        reader: IdentityReader,
        sessions: SessionLookup,
        traces: TraceIdentities,
        hold: HoldBuffer,
        directory: Directory | None = None,
        usage: UsageReader | None = None,
        *,
        columns: bool = True,
    ) -> None:
        """``columns=False`` decodes every request in full (the reference for tests)."""
        self._rules = rules
        self._columns_enabled = columns
        self._resolver = resolver
        self._reader = reader
        self._sessions = sessions
        self._traces = traces
        self._hold = hold
        self.directory = directory if directory is not None else Directory.empty()
        self._find_span_addr = AttributeFinder(rules.address_keys).find
        self._find_resource_addr = AttributeFinder(rules.address_keys).find
        self._find_model = AttributeFinder(rules.model_keys).find if rules.model_keys else None
        self._principal_keys = frozenset(rules.principal_keys)
        self._normalize = AddressNormalizer()
        self._encoder = AttributionEncoder(rules.hasher)
        self._usage = usage
        self._holding: list[HeldGroup] = []  # held by the receive() in progress
        self._gathering: _Holding | None = None  # the message path's held spans
        self._forced: list[Piece] = []  # forced out of the hold by the receive() in progress
        facts = ColumnFacts(reader, rules.principal_keys)
        wanted = [*rules.address_keys, *rules.model_keys, *(USAGE_KEYS if usage else ())]
        self._column_reader = ColumnReader([*wanted, *facts.wanted])
        decider = Decider(resolver)
        self._tally = UsageTally(usage) if usage is not None else None
        self._releaser = Releaser(resolver, decider, self._encoder, traces, self._tally)
        self._batch = BatchPath(
            rules,
            decider,
            self._tally,
            traces,
            self._normalize,
            self._encoder,
            lambda group, out: self.hold_group(group, out),
            resolver.named,
            facts,
            reader,
            self._learned_here,
        )

    @property
    def lags(self) -> LagLearner | None:
        """The learner of each address's event -> span lag (None when learning is off)."""
        return self._resolver.lags

    @property
    def held(self) -> int:
        """Spans currently held."""
        return len(self._hold)

    # ------------------------------------------------------------------ receive

    def admit(self, received: Received) -> None:
        """Check, before the request is acknowledged, that it can be read.

        Raises ``DecodeError`` when the request will need a full decode and does
        not decode. A request read by columns was checked down to the span fields
        and attributes the service reads; the rest of each span is forwarded
        as it came.
        """
        if self._columns_of(received) is None:
            received.message()

    def receive(self, received: Received, now_ns: int, tag: int = 0) -> Outcome:
        """Attribute or hold every span of ``received``.

        ``tag`` is carried by the spans held from this request into the payloads
        that release them (see :class:`Payload`).
        """
        out = Outcome()
        self._holding = []
        try:
            columns = self._columns_of(received)
            if columns is not None:
                self._batch.receive(
                    received, columns, now_ns, tag, out, self._sessions, self.directory
                )
            else:
                self._receive(received.message(), received.raw, now_ns, tag, out)
            forced, self._forced = self._forced, []
            self._release(forced, out)
            return self._spill(out)
        except Exception as exc:
            # Undo this request's holds, so that forwarding the request as received
            # does not send them twice; spans of earlier requests forced out or
            # released meanwhile still go out with the fallback.
            for group in self._holding:
                self._hold.release(group)
            mine = {id(group) for group in self._holding}
            earlier = [p for p in self._forced if id(p.group) not in mine]
            with contextlib.suppress(Exception):  # it fails open itself; keep the cause
                self._release(earlier, out)
            raise CorrelationFailed(out.released) from exc
        finally:
            self._holding = []
            self._forced = []
            self._gathering = None

    def usage_totals(self) -> dict[UsageKey, list[float]]:
        """LLM usage of the spans that left since the last call, per (user, provider,
        model): [calls, tokens in, tokens out, cost, errors]. Read at each metrics
        scrape; an outcome carries it in ``usage`` when the tally fills up first."""
        return self._tally.drain() if self._tally is not None else {}

    def _spill(self, out: Outcome) -> Outcome:
        if self._tally is not None and self._tally.full:
            out.usage = self._tally.drain()
        return out

    def _columns_of(self, received: Received) -> Columns | None:
        """The request's columns, or None when they do not read cleanly (see
        ``columns``: such requests take the message path)."""
        if not self._columns_enabled:
            return None
        columns = received.columns(self._column_reader)
        if columns is None:
            return None
        try:
            received.frames()
        except DecodeError:  # the full decode will say so
            return None
        return columns

    def _receive(
        self,
        request: ExportTraceServiceRequest,
        raw: bytes,
        now_ns: int,
        tag: int,
        out: Outcome,
    ) -> Outcome:
        check = self._reader.maybe_present(raw)
        # Only requests that hold LLM calls pay for reading usage.
        usage = self._usage if self._usage is not None and _LLM_MARK in raw else None
        if usage is not None:
            usage.begin(raw)
        changed = False
        learned: list[bytes] = []
        # Identity first, as on the column path: a span's trace is known to every
        # span of the request, whichever comes first.
        users = iter(self._identities(request, now_ns, learned) if check else ())
        self._gathering = _Holding()
        for rs in request.resource_spans:
            changed |= self._receive_resource(rs, users, check, out, usage)
        gathered, self._gathering = self._gathering, None
        if gathered.spans:
            self.hold_group(gathered.group(now_ns + self._rules.hold_ns, tag), out)
        if out.held:
            _drop_empty(request)
        if out.spans > out.held:
            data = request.SerializeToString() if changed or out.held else raw
            out.current = Payload(data, out.spans - out.held, Counter({tag: 1}))
        for trace_id in learned:
            self._release_trace(trace_id, out)
            user = self._traces.get(trace_id)
            if user is not None:
                out.learned.append((trace_id, user))
        return out

    def _identities(
        self, request: ExportTraceServiceRequest, now_ns: int, learned: list[bytes]
    ) -> list[User | None]:
        """Each span's identity (its own, else its resource's), in request order;
        learns the traces they name."""
        read, put = self._reader.read, self._traces.put
        users: list[User | None] = []
        for rs in request.resource_spans:
            resource_user = read(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    user = read(span.attributes) or resource_user
                    users.append(user)
                    if user is not None and span.trace_id and put(span.trace_id, user, now_ns):
                        learned.append(span.trace_id)
        return users

    def _receive_resource(
        self,
        rs: ResourceSpans,
        users: Iterator[User | None],
        check: bool,
        out: Outcome,
        usage: UsageReader | None,
    ) -> bool:
        attrs = rs.resource.attributes
        raw_addr = self._find_resource_addr(attrs)
        resource_ip = self._normalize(raw_addr) if raw_addr else None
        changed = False
        memo: Memo = {}
        for ss in rs.scope_spans:
            out.spans += len(ss.spans)
            changed |= self._receive_scope(rs, ss, users, resource_ip, check, out, memo, usage)
        return changed

    def _receive_scope(
        self,
        rs: ResourceSpans,
        ss: ScopeSpans,
        users: Iterator[User | None],
        resource_ip: str | None,
        check: bool,
        out: Outcome,
        memo: Memo,
        usage: UsageReader | None,
    ) -> bool:
        """The span walk; this loop is the service's per-span cost, so it stays flat.

        Fail open: a span whose attribution raises is forwarded as it came and
        counted; it never fails the request.
        """
        trace_map, named = self._traces.entries, self._resolver.named
        hold_ns = self._rules.hold_ns
        origin: Origin | None = None
        held: list[int] = []
        changed = False
        for index, span in enumerate(ss.spans):
            try:
                attrs = span.attributes
                user = next(users, None)
                a: Attribution | None = None
                facts: SpanFacts | None = None
                if user is not None:
                    a = named(user, "span", EXACT)
                elif trace_map and (traced := trace_map.get(span.trace_id)) is not None:
                    a = named(traced, "trace", EXACT)
                elif hold_ns:
                    if origin is None:
                        origin = _origin(rs, ss)
                    used = usage.read(attrs) if usage is not None else None
                    self._hold_span(span, origin, resource_ip, check, used)
                    held.append(index)
                    continue
                else:
                    a, facts = self._resolve_span(span, resource_ip, memo)
                if usage is not None and (used := usage.read(attrs)) is not None:
                    assert self._tally is not None
                    self._tally.add(a.user if a is not None else None, used)
                changed |= self._write(span, a, facts, check, out)
            except Exception:  # one bad span must not fail the request
                out.failed += 1
        _delete(ss.spans, held)
        return changed

    def _resolve_span(
        self, span: Span, resource_ip: str | None, memo: Memo
    ) -> tuple[Attribution | None, SpanFacts | None]:
        """Timing and directory links for a span that is not held."""
        raw_addr = self._find_span_addr(span.attributes)
        ip = self._normalize(raw_addr) if raw_addr else resource_ip
        if (
            ip is not None
            and not self.directory.has_principals
            and not self._sessions.has_events(ip)
        ):
            # Only long sessions and directory addresses can answer: neither needs
            # the model or principals, and their answer is shared across the batch.
            return self._resolver.by_address(
                ip, span.start_time_unix_nano, self._sessions, self.directory, memo
            ), None
        facts = self._facts(span, resource_ip)
        return self._resolve(facts), facts

    def _hold_span(
        self,
        span: Span,
        origin: Origin,
        resource_ip: str | None,
        check: bool,
        used: Usage | None,
    ) -> None:
        gathering = self._gathering
        assert gathering is not None
        gathering.spans.append(span.SerializeToString())
        gathering.origins.append(origin)
        gathering.trace_ids.append(span.trace_id)
        gathering.facts.append(self._facts(span, resource_ip))
        gathering.present.append(_present(span.attributes) if check else None)
        gathering.usages.append(used)

    def hold_group(self, group: HeldGroup, out: Outcome) -> None:
        """Put ``group`` in the hold buffer; spans it forces out leave in ``out``."""
        out.held += len(group)
        self._holding.append(group)
        forced = self._hold.add(group)
        if forced:
            out.forced_out += sum(len(p.indexes) for p in forced)
            self._forced.extend(forced)  # sent when the request is through (see receive)

    # ------------------------------------------------------------------ later identity

    def on_session(self, session: Session, now_ns: int) -> Outcome:
        """Release the held spans of a trace that a newly stored event names.

        An event without a trace id releases nothing early: another user's event
        for the same window may still arrive (webhooks and filters are not
        ordered), so timing-based matches are decided at the deadline, with every
        event that arrived by then.
        """
        out = Outcome()
        if session.trace_id:
            trace_id = bytes.fromhex(session.trace_id)
            if self._traces.put(trace_id, session.user, now_ns):
                self._release_trace(trace_id, out)
        return self._spill(out)

    def learn_trace(self, trace_id: bytes, user: User, now_ns: int) -> Outcome:
        """A trace's identity learned elsewhere (another replica): release its held spans."""
        out = Outcome()
        if self._traces.put(trace_id, user, now_ns):
            self._release_trace(trace_id, out)
        return self._spill(out)

    def tick(self, now_ns: int) -> Outcome:
        """Release spans whose hold ran out, attributed by timing and the directory."""
        out = Outcome()
        due = self._hold.due(now_ns)
        out.released_deadline += sum(len(p.indexes) for p in due)
        self._release(due, out)
        return self._spill(out)

    def drain(self) -> Outcome:
        """Release every held span now (shutdown)."""
        out = Outcome()
        held = self._hold.drain()
        out.released_deadline += sum(len(p.indexes) for p in held)
        self._release(held, out)
        return self._spill(out)

    def _release(self, pieces: Sequence[Piece], out: Outcome, *, by_trace: bool = False) -> None:
        self._releaser.release(pieces, out, self._sessions, self.directory, by_trace_only=by_trace)

    def _learned_here(self, trace_id: bytes, out: Outcome) -> None:
        """A span of this request named its trace: release the trace, share it."""
        self._release_trace(trace_id, out)
        user = self._traces.get(trace_id)
        if user is not None:
            out.learned.append((trace_id, user))

    def _release_trace(self, trace_id: bytes, out: Outcome) -> None:
        released = self._hold.trace(trace_id)
        if released:
            out.released_early += sum(len(p.indexes) for p in released)
            self._release(released, out, by_trace=True)

    # ------------------------------------------------------------------ helpers

    def _resolve(self, facts: SpanFacts) -> Attribution | None:
        return self._resolver.resolve(facts, self._sessions, self.directory)

    def _write(
        self, span: Span, a: Attribution | None, facts: SpanFacts | None, check: bool, out: Outcome
    ) -> bool:
        self._count(a, facts, out)
        if a is None:
            return False
        present = _present(span.attributes) if check else None
        span.MergeFromString(self._encoder.encoded(a, present))
        return True

    @staticmethod
    def _count(a: Attribution | None, facts: SpanFacts | None, out: Outcome) -> None:
        if a is None:
            out.unattributed += 1
            if facts is not None and facts.ip is None:
                out.no_address += 1
        else:
            out.attributed[a.method, a.confidence] += 1

    def _facts(self, span: Span, resource_ip: str | None) -> SpanFacts:
        attrs = span.attributes
        raw_addr = self._find_span_addr(attrs)
        ip = self._normalize(raw_addr) if raw_addr else resource_ip
        model = (self._find_model(attrs) or "") if self._find_model is not None else ""
        principals: tuple[tuple[str, str], ...] = ()
        if self.directory.has_principals:
            principals = _principals(attrs, self._principal_keys)
        return SpanFacts(ip, span.start_time_unix_nano, model, principals)


def _principals(
    attributes: Sequence[KeyValue], keys: frozenset[str]
) -> tuple[tuple[str, str], ...]:
    """The span's (key, value) pairs for the configured principal keys."""
    return tuple(
        (kv.key, kv.value.string_value)
        for kv in attributes
        if kv.key in keys and kv.value.string_value
    )


def _origin(rs: ResourceSpans, ss: ScopeSpans) -> Origin:
    """The serialized resource and scope a held span came with."""
    return Origin(
        rs.resource.SerializeToString() if rs.HasField("resource") else None,
        rs.schema_url,
        ss.scope.SerializeToString() if ss.HasField("scope") else None,
        ss.schema_url,
    )


def _present(attributes: Sequence[KeyValue]) -> frozenset[str]:
    """The keys among those we write that ``attributes`` already has."""
    return frozenset(kv.key for kv in attributes if kv.key in _WRITTEN)


def _delete(items: MutableSequence[Any], indexes: list[int]) -> None:
    """Remove the entries at ``indexes`` (ascending) from a repeated field."""
    if not indexes:
        return
    if len(indexes) == len(items):
        del items[:]
        return
    for index in reversed(indexes):
        del items[index]


def _drop_empty(request: ExportTraceServiceRequest) -> None:
    """Remove scopes and resources left without spans after holding."""
    for rs in request.resource_spans:
        empty = [i for i, ss in enumerate(rs.scope_spans) if not ss.spans]
        _delete(rs.scope_spans, empty)
    empty = [i for i, rs in enumerate(request.resource_spans) if not rs.scope_spans]
    _delete(request.resource_spans, empty)
