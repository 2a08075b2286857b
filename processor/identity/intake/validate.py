"""Turns session API messages into store sessions, naming every bad field (pure)."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Sequence

from google.protobuf import json_format

from processor.errors import InvalidInput, Problem
from processor.identity.intake.gen.user_enricher.v1 import sessions_pb2 as pb
from processor.model import EVENT_KINDS, Session, SessionKind, User

MAX_SESSIONS_PER_PUSH = 1000
MAX_TEXT = 256  # bytes of any one string field: ids, emails, names, models
MAX_ROLES = 32
MAX_TTL_S = 7 * 24 * 3600  # a week: longer "sessions" are a directory's job
_NS = 1_000_000_000
# Deliberately loose: Open WebUI accepts addresses such as admin@localhost.
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def parse_json_body(body: bytes) -> pb.PushSessionsRequest | pb.Session:
    """Parse one Session, or ``{"sessions": [...]}``, from an HTTP JSON body."""
    try:
        data = json.loads(body)
    except RecursionError as exc:  # nesting deeper than the interpreter's limit
        raise InvalidInput([Problem("", "body is nested too deeply")]) from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers too long
        raise InvalidInput([Problem("", f"body is not valid JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise InvalidInput([Problem("", "body must be a JSON object")])
    batch = "sessions" in data
    message: pb.PushSessionsRequest | pb.Session = (
        pb.PushSessionsRequest() if batch else pb.Session()
    )
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        raise InvalidInput([Problem("", str(exc))]) from exc
    return message


def to_sessions(
    message: pb.PushSessionsRequest | pb.Session, *, now_ns: int, default_ttl_s: float
) -> list[Session]:
    """Validate every session; all-or-nothing, so one bad field rejects the batch.

    Problems in a batch are located as ``sessions[i].field``.
    """
    batch = isinstance(message, pb.PushSessionsRequest)
    messages: Sequence[pb.Session] = (
        list(message.sessions) if isinstance(message, pb.PushSessionsRequest) else [message]
    )
    if not messages:
        raise InvalidInput([Problem("sessions", "at least one session is required")])
    if len(messages) > MAX_SESSIONS_PER_PUSH:
        raise InvalidInput(
            [Problem("sessions", f"at most {MAX_SESSIONS_PER_PUSH} sessions per push")]
        )
    problems: list[Problem] = []
    sessions: list[Session] = []
    for index, message in enumerate(messages):
        prefix = f"sessions[{index}]." if batch else ""
        found: list[Problem] = []
        session = _to_session(message, now_ns, default_ttl_s, found)
        problems.extend(Problem(prefix + p.path, p.message) for p in found)
        if session is not None:
            sessions.append(session)
    if problems:
        raise InvalidInput(problems)
    return sessions


def _to_session(
    m: pb.Session, now_ns: int, default_ttl_s: float, problems: list[Problem]
) -> Session | None:
    ip = _source_ip(m.source_ip, problems)
    user = _user(m, problems)
    kind = _kind(m, problems)
    start_ns = m.start.ToNanoseconds() if m.HasField("start") else now_ns
    if abs(start_ns - now_ns) > MAX_TTL_S * _NS:
        problems.append(Problem("start", "must be within 7 days of now"))
    end_ns = start_ns if kind in EVENT_KINDS else _end(m, start_ns, default_ttl_s, problems)
    for name, value in (("model", m.model), ("chat_id", m.chat_id), ("message_id", m.message_id)):
        _check_text(name, value, problems)
    trace_id = m.trace_id.lower()
    if trace_id and (not _TRACE_ID.fullmatch(trace_id) or trace_id == "0" * 32):
        problems.append(Problem("trace_id", "expected 32 hex digits, not all zero"))
    if problems or ip is None or user is None or end_ns is None or kind is None:
        return None
    return Session(ip, user, start_ns, end_ns, model=m.model, trace_id=trace_id, kind=kind)


def _kind(m: pb.Session, problems: list[Problem]) -> SessionKind | None:
    if m.kind in ("", "session"):
        return "session"
    if m.kind not in EVENT_KINDS:
        problems.append(Problem("kind", "must be session, request or call"))
        return None
    if m.HasField("end") or m.ttl_seconds:
        problems.append(Problem("end", "a request event is a point in time: no end or ttl_seconds"))
        return None
    return "call" if m.kind == "call" else "request"


def _source_ip(text: str, problems: list[Problem]) -> str | None:
    if not text:
        problems.append(Problem("source_ip", "required"))
        return None
    try:
        if text != "".join(text.split()):
            raise ValueError("whitespace")
        ip = ipaddress.ip_address(text)
    except ValueError:
        problems.append(Problem("source_ip", "not an IP address (no port, no brackets)"))
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _user(m: pb.Session, problems: list[Problem]) -> User | None:
    if not m.HasField("user"):
        problems.append(Problem("user", "required"))
        return None
    u = m.user
    before = len(problems)
    if not u.id and not u.email:
        problems.append(Problem("user", "id or email is required"))
    if u.email and not _EMAIL.fullmatch(u.email):
        problems.append(Problem("user.email", "not an email address"))
    for key, value in (("user.id", u.id), ("user.email", u.email), ("user.name", u.name)):
        _check_text(key, value, problems)
    if len(u.roles) > MAX_ROLES:
        problems.append(Problem("user.roles", f"at most {MAX_ROLES} roles"))
    for i, role in enumerate(u.roles):
        _check_text(f"user.roles[{i}]", role, problems)
    if len(problems) > before:
        return None
    return User(id=u.id, email=u.email, name=u.name, roles=tuple(u.roles))


def _end(m: pb.Session, start_ns: int, default_ttl_s: float, problems: list[Problem]) -> int | None:
    if m.HasField("end") and m.ttl_seconds:
        problems.append(Problem("end", "give end or ttl_seconds, not both"))
        return None
    if m.ttl_seconds > MAX_TTL_S:
        problems.append(Problem("ttl_seconds", f"at most {MAX_TTL_S} (7 days)"))
        return None
    if m.HasField("end"):
        end_ns = m.end.ToNanoseconds()
        if end_ns < start_ns:
            problems.append(Problem("end", "must not be before start"))
            return None
        if end_ns - start_ns > MAX_TTL_S * _NS:
            problems.append(Problem("end", "at most 7 days after start"))
            return None
        return end_ns
    ttl_s = m.ttl_seconds or default_ttl_s
    return start_ns + int(ttl_s * _NS)


def _check_text(path: str, value: str, problems: list[Problem]) -> None:
    if len(value.encode()) > MAX_TEXT:
        problems.append(Problem(path, f"longer than {MAX_TEXT} bytes"))
