"""The span walk over a fully decoded request: the path for requests whose columns
cannot be read (see ``columns``), and the reference the tests compare the
column path (``batch``) against.

It gives the same attributions, counts and payloads as the column path, one
span at a time: identity first (a span's trace is known to every span of the
request), then traces, holding, and timing and the directory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, MutableSequence, Sequence
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from processor.correlate.find import AttributeFinder
from processor.correlate.hold import HeldGroup
from processor.correlate.identity import WRITTEN_KEYS
from processor.correlate.outcome import Outcome, Payload
from processor.correlate.parts import SpanPathParts
from processor.correlate.resolve import EXACT, Memo, SpanFacts
from processor.correlate.usage import PROVIDER, Usage, UsageReader
from processor.identity.directory import Directory
from processor.identity.sessions.store import SessionLookup
from processor.model import Attribution, User
from processor.wire.encoding import Origin

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


class MessagePath:
    """Attributes decoded requests for one correlator (its parts are injected)."""

    def __init__(self, parts: SpanPathParts, usage: UsageReader | None) -> None:
        rules = parts.rules
        self._rules = rules
        self._resolver = parts.resolver
        self._reader = parts.identity
        self._traces = parts.traces
        self._normalize = parts.normalize
        self._encoder = parts.encoder
        self._usage = usage
        self._tally = parts.tally
        self._hold = parts.hold
        self._learned = parts.learned
        self._find_addr = AttributeFinder(rules.address_keys).find
        self._find_model = AttributeFinder(rules.model_keys).find if rules.model_keys else None
        self._principal_keys = frozenset(rules.principal_keys)
        self._gathering: _Holding | None = None
        self._sessions: SessionLookup | Any = None
        self.directory = Directory.empty()

    def receive(
        self,
        request: ExportTraceServiceRequest,
        raw: bytes,
        now_ns: int,
        tag: int,
        out: Outcome,
        sessions: SessionLookup,
        directory: Directory,
    ) -> Outcome:
        """Attribute or hold every span of ``request`` (``raw`` is its encoding)."""
        self._sessions, self.directory = sessions, directory
        check = self._reader.maybe_present(raw)
        # Only requests that hold LLM calls pay for reading usage.
        usage = self._usage if self._usage is not None and _LLM_MARK in raw else None
        if usage is not None:
            usage.begin(raw)
        changed = False
        learned: dict[bytes, User] = {}
        # Identity first, as on the column path: a span's trace is known to every
        # span of the request, whichever comes first.
        users = iter(self._identities(request, now_ns, learned) if check else ())
        self._gathering = _Holding()
        for rs in request.resource_spans:
            changed |= self._receive_resource(rs, users, check, out, usage)
        gathered, self._gathering = self._gathering, None
        if gathered.spans:
            self._hold(gathered.group(now_ns + self._rules.hold_ns, tag), out)
        if out.held:
            _drop_empty(request)
        if out.spans > out.held:
            data = request.SerializeToString() if changed or out.held else raw
            out.current = Payload(data, out.spans - out.held, Counter({tag: 1}))
        if learned:
            self._learned(learned, out)
        return out

    def _identities(
        self, request: ExportTraceServiceRequest, now_ns: int, learned: dict[bytes, User]
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
                        learned[span.trace_id] = user
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
        raw_addr = self._find_addr(attrs)
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
        raw_addr = self._find_addr(span.attributes)
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
        raw_addr = self._find_addr(attrs)
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
