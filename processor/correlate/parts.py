"""What both span walks (columns, full decode) are built from (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from processor.correlate.address import AddressNormalizer
from processor.correlate.hold import HeldGroup
from processor.correlate.identity import AttributionEncoder
from processor.correlate.outcome import Outcome, Rules
from processor.correlate.resolve import Resolver
from processor.correlate.span_identity import IdentityReader
from processor.correlate.usage_tally import UsageTally
from processor.identity.sessions.traces import TraceIdentities
from processor.model import User


@dataclass(frozen=True, slots=True)
class SpanPathParts:
    """Built once by the correlator and shared by its two span walks."""

    rules: Rules
    resolver: Resolver
    identity: IdentityReader
    traces: TraceIdentities
    normalize: AddressNormalizer
    encoder: AttributionEncoder
    tally: UsageTally | None
    hold: Callable[[HeldGroup, Outcome], None]  # hold a request's spans
    learned: Callable[[Mapping[bytes, User], Outcome], None]  # traces a request's spans named
