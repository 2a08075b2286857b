"""The attribution chain over whole requests: span -> trace -> session -> directory.

Pure and synchronous: the caller passes the time in and sends the payloads it
gets back. Spans without exact identity are held (as bytes) for a while, so that
identity arriving after them, from another span of their trace or from a
request event, can still attribute them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence

from google.protobuf.message import DecodeError

from processor.correlate.address import AddressNormalizer
from processor.correlate.batch import BatchPath
from processor.correlate.column_facts import ColumnFacts
from processor.correlate.decide import Decider
from processor.correlate.decided import DecisionTable
from processor.correlate.hold import HeldGroup, HoldBuffer, Piece
from processor.correlate.identity import AttributionEncoder
from processor.correlate.lag import LagLearner
from processor.correlate.message_path import MessagePath
from processor.correlate.outcome import CorrelationFailed, Outcome, Payload, Rules
from processor.correlate.parts import SpanPathParts
from processor.correlate.release import Releaser
from processor.correlate.resolve import Resolver
from processor.correlate.span_identity import IdentityReader
from processor.correlate.usage import USAGE_KEYS, UsageKey, UsageReader
from processor.correlate.usage_tally import UsageTally
from processor.identity.directory import Directory
from processor.identity.sessions.store import SessionLookup
from processor.identity.sessions.traces import TraceIdentities
from processor.model import Session, User
from processor.wire.columns import ColumnReader, Columns
from processor.wire.received import Received

__all__ = ["CorrelationFailed", "Correlator", "Outcome", "Payload", "Rules"]


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
        self._columns_enabled = columns
        self._resolver = resolver
        self._sessions = sessions
        self._traces = traces
        self._hold = hold
        self.directory = directory if directory is not None else Directory.empty()
        self._normalize = AddressNormalizer()
        self._encoder = AttributionEncoder(rules.hasher)
        self._holding: list[HeldGroup] = []  # held by the receive() in progress
        self._forced: list[Piece] = []  # forced out of the hold by the receive() in progress
        facts = ColumnFacts(reader, rules.principal_keys)
        wanted = [*rules.address_keys, *rules.model_keys, *(USAGE_KEYS if usage else ())]
        self._column_reader = ColumnReader([*wanted, *facts.wanted])
        decider = Decider(resolver)
        self._tally = UsageTally(usage) if usage is not None else None
        table = DecisionTable(self._encoder)
        self._releaser = Releaser(resolver, decider, table, self._encoder, traces, self._tally)
        parts = SpanPathParts(
            rules,
            resolver,
            reader,
            traces,
            self._normalize,
            self._encoder,
            self._tally,
            lambda group, out: self.hold_group(group, out),
            self._learned_here,
        )
        self._batch = BatchPath(parts, decider, facts, table)
        self._message_path = MessagePath(parts, usage)

    @property
    def lags(self) -> LagLearner | None:
        """The learner of each address's event -> span lag (None when learning is off)."""
        return self._resolver.lags

    @property
    def column_reader(self) -> ColumnReader:
        """What reads each request's columns (benchmarks time it alone)."""
        return self._column_reader

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
                self._message_path.receive(
                    received.message(),
                    received.raw,
                    now_ns,
                    tag,
                    out,
                    self._sessions,
                    self.directory,
                )
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

    def use_directory(self, directory: Directory) -> None:
        """A reloaded directory: spans from now on are looked up in it."""
        self.directory = directory

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
                self._release_traces((trace_id,), out)
        return self._spill(out)

    def learn_trace(self, trace_id: bytes, user: User, now_ns: int) -> Outcome:
        """A trace's identity learned elsewhere (another replica): release its held spans."""
        out = Outcome()
        if self._traces.put(trace_id, user, now_ns):
            self._release_traces((trace_id,), out)
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

    def _learned_here(self, learned: Mapping[bytes, User], out: Outcome) -> None:
        """Spans of this request named these traces: release them, share them."""
        self._release_traces(learned.keys(), out)
        out.learned.extend(learned.items())

    def _release_traces(self, trace_ids: Collection[bytes], out: Outcome) -> None:
        released = self._hold.traces(trace_ids)
        if released:
            out.released_early += sum(len(p.indexes) for p in released)
            self._release(released, out, by_trace=True)

    # ------------------------------------------------------------------ helpers
