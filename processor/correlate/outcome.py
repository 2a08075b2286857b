"""What the correlator hands back: payloads to send and counts for metrics (pure data)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from processor.correlate.identity import EmailHasher
from processor.correlate.usage import UsageKey
from processor.model import User


@dataclass(frozen=True, slots=True)
class Rules:
    """Compiled correlation settings."""

    address_keys: tuple[str, ...]
    model_keys: tuple[str, ...]
    principal_keys: tuple[str, ...]
    hold_ns: int
    hasher: EmailHasher | None = None  # identity.hash_emails


class Payload(NamedTuple):
    """A serialized ExportTraceServiceRequest, its span count, and where they came from.

    ``tags`` counts the spans per caller-supplied request tag (the current part
    of a request counts as one unit), so a caller can tell when every span of a
    request it journaled has been delivered.
    """

    data: bytes
    spans: int
    tags: Counter[int]


@dataclass(slots=True)
class Outcome:
    """What to send, and what happened (for metrics).

    ``current`` holds the received request's spans that were not held; ``released``
    holds spans that left the hold buffer (possibly from earlier requests).
    """

    current: Payload | None = None
    released: list[Payload] = field(default_factory=list)
    spans: int = 0
    # (method, confidence) -> spans attributed that way (("session", "ambiguous")
    # with no user under the skip and candidates policies).
    attributed: Counter[tuple[str, str]] = field(default_factory=Counter)
    unattributed: int = 0  # released or passed with nobody found (no user, no ambiguity)
    no_address: int = 0
    held: int = 0
    failed: int = 0  # spans whose attribution raised: forwarded as they came
    failure: Exception | None = None  # the first error behind ``failed`` (for the log)
    released_early: int = 0
    released_deadline: int = 0
    forced_out: int = 0
    # Trace identities learned from this request's spans (to share with replicas).
    learned: list[tuple[bytes, User]] = field(default_factory=list)
    # LLM usage of the spans that left, by (user, provider, model).
    usage: dict[UsageKey, list[float]] = field(default_factory=dict)


class CorrelationFailed(Exception):
    """``receive`` failed as a whole; ``released`` must still be sent (spans of earlier
    requests that left the hold meanwhile). This request's holds were undone."""

    def __init__(self, released: list[Payload]) -> None:
        super().__init__("correlation failed")
        self.released = released
