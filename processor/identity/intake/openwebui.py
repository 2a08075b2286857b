"""Open WebUI event webhooks -> sessions and request events (pure).

Open WebUI (0.10+) posts one JSON ``Event`` per event:
``{schema, id, event, resource, operation, created_at, instance_id, version, source,
actor: {id, name, email, role, ...}, subject, data, message}``. Its legacy
``WEBHOOK_URL`` posts ``{"action": "signup", "message": ..., "user": ...}``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from processor.errors import InvalidInput, Problem
from processor.model import Session, User

_NS = 1_000_000_000
# created_at is in whole seconds, so the receipt time is the event time; a
# created_at further than this from the receipt means the webhook was delayed
# (retried, queued) and its receipt time says nothing about the request.
STALE_AFTER_S = 60
_MAX_TEXT = 256
KNOWN_EVENTS = frozenset(
    {
        "message.created",
        "chat.created",
        "chat.updated",
        "chat.finished",
        "auth.login",
        "auth.logout",
    }
)


@dataclass(frozen=True, slots=True)
class Store:
    """Store this session or request event."""

    session: Session


@dataclass(frozen=True, slots=True)
class Close:
    """End ``user_key``'s sessions on ``source_ip`` at ``at_ns`` (sign-out)."""

    source_ip: str
    user_key: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class Ignore:
    """Nothing to do; ``reason`` is counted (unknown, legacy, no_actor, stale)."""

    reason: str


Action = Store | Close | Ignore


def parse_body(body: bytes) -> dict[str, Any]:
    """The webhook JSON object; InvalidInput when it is not one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # also integers too long to convert
        raise InvalidInput([Problem("", f"body is not valid JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise InvalidInput([Problem("", "body must be a JSON object")])
    return data


def event_name(data: dict[str, Any]) -> str:
    """The event's name for metrics: a known name, ``legacy``, or ``other``."""
    name = data.get("event")
    if isinstance(name, str) and name in KNOWN_EVENTS:
        return name
    return "legacy" if "action" in data and "event" not in data else "other"


def interpret(data: dict[str, Any], *, source_ip: str, now_ns: int, session_ttl_s: float) -> Action:
    """What a webhook event means for attribution, at receipt time ``now_ns``."""
    name = event_name(data)
    if name in ("legacy", "other"):
        return Ignore(name if name == "legacy" else "unknown")
    user = _actor(data.get("actor"))
    if user is None:
        return Ignore("no_actor")
    if _stale(data.get("created_at"), now_ns):
        return Ignore("stale")
    if name == "auth.login":
        end = now_ns + int(session_ttl_s * _NS)
        return Store(Session(source_ip, user, now_ns, end))
    if name == "auth.logout":
        return Close(source_ip, user.key, now_ns)
    payload = data.get("data")
    if not isinstance(payload, dict):
        payload = {}
    model = _text(payload.get("model")) or _text(payload.get("model_id"))
    return Store(Session(source_ip, user, now_ns, now_ns, model=model, kind="request"))


def _stale(created: Any, now_ns: int) -> bool:
    """True when created_at (whole seconds) is too far from the receipt time."""
    if isinstance(created, bool) or not isinstance(created, int | float):
        return False
    if isinstance(created, float) and not math.isfinite(created):
        return True  # NaN or infinity says nothing about when: not usable as a time
    try:
        return abs(now_ns / _NS - created) > STALE_AFTER_S
    except OverflowError:  # an integer beyond any float: far from now
        return True


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _actor(actor: Any) -> User | None:
    if not isinstance(actor, dict):
        return None
    email = _text(actor.get("email"))
    user = User(
        id=_text(actor.get("id")),
        email=email if _EMAIL.fullmatch(email) else "",  # never a non-address as an email
        name=_text(actor.get("name")),
        roles=(role,) if (role := _text(actor.get("role"))) else (),
    )
    return user if user.key else None


def _text(value: Any) -> str:
    return value.strip()[:_MAX_TEXT] if isinstance(value, str) else ""
