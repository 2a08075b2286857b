"""Tables for the pure session API validation in processor.identity.intake.validate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from processor.errors import InvalidInput
from processor.identity.intake.gen.user_enricher.v1 import sessions_pb2 as pb
from processor.identity.intake.validate import (
    MAX_ROLES,
    MAX_SESSIONS_PER_PUSH,
    MAX_TEXT,
    MAX_TTL_S,
    parse_json_body,
    to_sessions,
)
from processor.model import Session, User
from processor.receive.auth import BearerToken

NOW_NS = 1_795_000_000_000_000_000
DEFAULT_TTL_S = 1800.0
S = 1_000_000_000
T0 = "2026-11-17T12:00:00Z"
T0_NS = 1_794_916_800 * S
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

# --------------------------------------------------------------------------- helpers


def session_dict(**changes: Any) -> dict[str, Any]:
    """A valid session in the JSON mapping, with top-level fields replaced by ``changes``."""
    data: dict[str, Any] = {"source_ip": "10.0.0.7", "user": {"id": "u-1", "email": "a@b.example"}}
    data.update(changes)
    return data


def session_msg(**changes: Any) -> pb.Session:
    """``session_dict(**changes)`` as a protobuf Session."""
    return json_format.ParseDict(session_dict(**changes), pb.Session())


def batch_msg(*sessions: dict[str, Any]) -> pb.PushSessionsRequest:
    """A PushSessionsRequest holding ``sessions`` (JSON mapping)."""
    return json_format.ParseDict({"sessions": list(sessions)}, pb.PushSessionsRequest())


def convert(message: pb.PushSessionsRequest | pb.Session) -> list[Session]:
    """to_sessions at NOW_NS with the default TTL."""
    return to_sessions(message, now_ns=NOW_NS, default_ttl_s=DEFAULT_TTL_S)


def problems_of(message: pb.PushSessionsRequest | pb.Session) -> list[tuple[str, str]]:
    """The (path, message) pairs to_sessions rejects ``message`` with."""
    with pytest.raises(InvalidInput) as caught:
        convert(message)
    return [(p.path, p.message) for p in caught.value.problems]


def paths_of(message: pb.PushSessionsRequest | pb.Session) -> list[str]:
    """Just the paths of the problems found in ``message``."""
    return [path for path, _ in problems_of(message)]


def body(data: Any) -> bytes:
    """``data`` as a JSON request body."""
    return json.dumps(data).encode()


# --------------------------------------------------------------------------- parse_json_body

SNAKE = {
    "source_ip": "10.0.0.7",
    "user": {"id": "u-1", "email": "a@b.example", "name": "Ann", "roles": ["admin"]},
    "start": T0,
    "ttl_seconds": 60,
    "model": "gpt-4o",
    "trace_id": TRACE_ID,
}
CAMEL = {
    "sourceIp": "10.0.0.7",
    "user": {"id": "u-1", "email": "a@b.example", "name": "Ann", "roles": ["admin"]},
    "start": T0,
    "ttlSeconds": 60,
    "model": "gpt-4o",
    "traceId": TRACE_ID,
}


@pytest.mark.parametrize("data", [SNAKE, CAMEL], ids=["snake_case", "lowerCamelCase"])
def test_parse_single_session_in_either_field_naming(data: dict[str, Any]) -> None:
    """A lone session object parses to a Session whatever the field-name style."""
    message = parse_json_body(body(data))
    assert isinstance(message, pb.Session)
    assert message.source_ip == "10.0.0.7"
    assert message.ttl_seconds == 60
    assert message.trace_id == TRACE_ID
    assert message.start.ToNanoseconds() == T0_NS
    assert list(message.user.roles) == ["admin"]


@pytest.mark.parametrize("count", [0, 1, 3])
def test_parse_sessions_wrapper_gives_a_batch(count: int) -> None:
    """``{"sessions": [...]}`` parses to a PushSessionsRequest holding every session."""
    message = parse_json_body(body({"sessions": [SNAKE, CAMEL, SNAKE][:count]}))
    assert isinstance(message, pb.PushSessionsRequest)
    assert len(message.sessions) == count


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "body is not valid JSON"),
        (b"", "body is not valid JSON"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b"[]", "body must be a JSON object"),
        (b"[{}]", "body must be a JSON object"),
        (b'"10.0.0.7"', "body must be a JSON object"),
        (b"null", "body must be a JSON object"),
        (body(session_dict(colour="red")), 'no field named "colour"'),
        (body({"sessions": [session_dict(colour="red")]}), 'no field named "colour"'),
        (body(session_dict(start="yesterday")), "start"),
        (body(session_dict(end="2026-13-45T00:00:00Z")), "end"),
        (body(session_dict(start=1_794_916_800)), "start"),
        (body(session_dict(ttl_seconds=-1)), "ttl_seconds"),
        (body({"sessions": "all"}), "sessions"),
    ],
    ids=[
        "malformed",
        "empty",
        "not-utf8",
        "array",
        "array-of-objects",
        "string",
        "null",
        "unknown-field",
        "unknown-field-in-batch",
        "bad-start",
        "bad-end",
        "numeric-timestamp",
        "negative-ttl",
        "sessions-not-a-list",
    ],
)
def test_parse_rejects_bad_bodies_with_one_top_level_problem(raw: bytes, fragment: str) -> None:
    """Undecodable or non-conforming bodies raise InvalidInput with one path-less problem."""
    with pytest.raises(InvalidInput) as caught:
        parse_json_body(raw)
    [problem] = caught.value.problems
    assert problem.path == ""
    assert fragment in problem.message


def test_parse_rejects_deeply_nested_json_as_invalid_input() -> None:
    """A small but deeply nested body is invalid input, not an internal error."""
    with pytest.raises(InvalidInput):
        parse_json_body(b"[" * 4000)


# --------------------------------------------------------------------------- to_sessions: accepted


def test_valid_session_converts_to_a_store_session() -> None:
    """Every field of a valid session reaches the store Session, times in Unix ns."""
    message = json_format.ParseDict(
        {**SNAKE, "ttl_seconds": 0, "end": "2026-11-17T12:30:00.5Z"}, pb.Session()
    )
    user = User(id="u-1", email="a@b.example", name="Ann", roles=("admin",))
    expected = Session("10.0.0.7", user, T0_NS, T0_NS + 1800 * S + S // 2, "gpt-4o", TRACE_ID)
    assert convert(message) == [expected]


@pytest.mark.parametrize(
    ("changes", "start_ns", "end_ns"),
    [
        ({}, NOW_NS, NOW_NS + int(DEFAULT_TTL_S) * S),
        ({"ttl_seconds": 90}, NOW_NS, NOW_NS + 90 * S),
        ({"ttl_seconds": MAX_TTL_S}, NOW_NS, NOW_NS + MAX_TTL_S * S),
        ({"start": T0}, T0_NS, T0_NS + int(DEFAULT_TTL_S) * S),
        ({"start": T0, "ttl_seconds": 5}, T0_NS, T0_NS + 5 * S),
        ({"start": T0, "end": T0}, T0_NS, T0_NS),
        ({"end": "2026-11-17T12:00:01Z", "start": T0}, T0_NS, T0_NS + S),
    ],
    ids=[
        "defaults",
        "ttl",
        "max-ttl",
        "start-default-ttl",
        "start-ttl",
        "zero-length",
        "start-end",
    ],
)
def test_start_defaults_to_now_and_end_to_start_plus_ttl(
    changes: dict[str, Any], start_ns: int, end_ns: int
) -> None:
    """Start falls back to now; end comes from end, else ttl_seconds, else the default TTL."""
    [session] = convert(session_msg(**changes))
    assert (session.start_ns, session.end_ns) == (start_ns, end_ns)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("10.0.0.7", "10.0.0.7"),
        ("::ffff:10.0.0.7", "10.0.0.7"),
        ("::FFFF:a00:7", "10.0.0.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::1", "::1"),
    ],
)
def test_source_ip_is_normalised(given: str, stored: str) -> None:
    """Addresses are stored canonically, IPv4-mapped IPv6 as plain IPv4."""
    [session] = convert(session_msg(source_ip=given))
    assert session.source_ip == stored


def test_uppercase_trace_id_is_accepted_and_lowercased() -> None:
    """An uppercase W3C trace id is accepted and stored in lowercase."""
    [session] = convert(session_msg(trace_id=TRACE_ID.upper()))
    assert session.trace_id == TRACE_ID


@pytest.mark.parametrize(
    "user",
    [{"id": "u-1"}, {"email": "admin@localhost"}, {"email": "x@y", "roles": ["r"] * MAX_ROLES}],
    ids=["id-only", "email-only", "max-roles"],
)
def test_user_needs_only_an_id_or_an_email(user: dict[str, Any]) -> None:
    """A user identified by id alone or by email alone is accepted."""
    [session] = convert(session_msg(user=user))
    assert session.user.key in ("u-1", "admin@localhost", "x@y")


def test_batch_of_max_size_is_accepted_in_order() -> None:
    """Exactly MAX_SESSIONS_PER_PUSH sessions are accepted, in request order."""
    ips = [f"10.0.{i // 256}.{i % 256}" for i in range(MAX_SESSIONS_PER_PUSH)]
    sessions = convert(batch_msg(*(session_dict(source_ip=ip) for ip in ips)))
    assert [s.source_ip for s in sessions] == ips


# --------------------------------------------------------------------------- to_sessions: rejected

LONG = "x" * (MAX_TEXT + 1)


@pytest.mark.parametrize(
    ("changes", "paths"),
    [
        ({"source_ip": ""}, ["source_ip"]),
        ({"source_ip": "10.0.0.7:443"}, ["source_ip"]),
        ({"source_ip": "[::1]"}, ["source_ip"]),
        ({"source_ip": "[::1]:443"}, ["source_ip"]),
        ({"source_ip": "10.0.0.256"}, ["source_ip"]),
        ({"source_ip": "example.com"}, ["source_ip"]),
        ({"source_ip": " 10.0.0.7"}, ["source_ip"]),
        ({"source_ip": "10.0.0.0/24"}, ["source_ip"]),
        ({"user": None}, ["user"]),
        ({"user": {}}, ["user"]),
        ({"user": {"name": "Ann", "roles": ["admin"]}}, ["user"]),
        ({"user": {"email": "not-an-email"}}, ["user.email"]),
        ({"user": {"email": "a@b@c"}}, ["user.email"]),
        ({"user": {"email": "a b@c"}}, ["user.email"]),
        ({"user": {"id": LONG}}, ["user.id"]),
        ({"user": {"email": f"{LONG}@b"}}, ["user.email"]),
        ({"user": {"id": "u", "name": LONG}}, ["user.name"]),
        ({"user": {"id": "u", "name": "é" * (MAX_TEXT // 2 + 1)}}, ["user.name"]),
        ({"user": {"id": "u", "roles": ["r"] * (MAX_ROLES + 1)}}, ["user.roles"]),
        ({"user": {"id": "u", "roles": ["ok", LONG]}}, ["user.roles[1]"]),
        ({"model": LONG}, ["model"]),
        ({"trace_id": "abc"}, ["trace_id"]),
        ({"trace_id": "g" * 32}, ["trace_id"]),
        ({"trace_id": TRACE_ID + "0"}, ["trace_id"]),
        ({"trace_id": "0" * 32}, ["trace_id"]),
        ({"start": T0, "end": "2026-11-17T11:59:59Z"}, ["end"]),
        ({"end": "2026-11-17T12:00:00Z"}, ["end"]),
        ({"start": T0, "end": T0, "ttl_seconds": 60}, ["end"]),
        ({"ttl_seconds": MAX_TTL_S + 1}, ["ttl_seconds"]),
        ({"start": T0, "end": "9999-12-31T00:00:00Z"}, ["end"]),
    ],
    ids=[
        "ip-missing",
        "ip-with-port",
        "ip-bracketed",
        "ip-bracketed-port",
        "ip-out-of-range",
        "ip-hostname",
        "ip-whitespace",
        "ip-cidr",
        "user-missing",
        "user-empty",
        "user-no-id-nor-email",
        "email-no-at",
        "email-two-ats",
        "email-space",
        "id-too-long",
        "email-too-long",
        "name-too-long",
        "name-too-many-bytes",
        "too-many-roles",
        "role-too-long",
        "model-too-long",
        "trace-id-short",
        "trace-id-not-hex",
        "trace-id-long",
        "trace-id-all-zero",
        "end-before-start",
        "end-before-default-start",
        "end-and-ttl",
        "ttl-too-big",
        "end-beyond-a-week",
    ],
)
def test_invalid_session_names_the_bad_field(changes: dict[str, Any], paths: list[str]) -> None:
    """Each invalid field is reported under its own dotted path."""
    assert paths_of(session_msg(**changes)) == paths


def test_bad_email_message_is_exact() -> None:
    """A malformed email is reported exactly as ``user.email: not an email address``."""
    with pytest.raises(InvalidInput) as caught:
        convert(session_msg(user={"email": "nobody"}))
    assert str(caught.value) == "user.email: not an email address"


def test_every_problem_is_reported_together() -> None:
    """One pass reports all problems of a session, not just the first."""
    message = json_format.ParseDict(
        {
            "source_ip": "10.0.0.7:80",
            "user": {"email": "nobody", "name": LONG},
            "ttl_seconds": MAX_TTL_S + 1,
            "model": LONG,
            "trace_id": "0" * 32,
        },
        pb.Session(),
    )
    assert sorted(paths_of(message)) == [
        "model",
        "source_ip",
        "trace_id",
        "ttl_seconds",
        "user.email",
        "user.name",
    ]


@pytest.mark.parametrize(
    ("message", "problems"),
    [
        (pb.PushSessionsRequest(), [("sessions", "at least one session is required")]),
        (
            batch_msg(*[session_dict()] * (MAX_SESSIONS_PER_PUSH + 1)),
            [("sessions", f"at most {MAX_SESSIONS_PER_PUSH} sessions per push")],
        ),
    ],
    ids=["empty", "too-many"],
)
def test_batch_size_is_bounded(
    message: pb.PushSessionsRequest, problems: list[tuple[str, str]]
) -> None:
    """A batch needs at least one and at most MAX_SESSIONS_PER_PUSH sessions."""
    assert problems_of(message) == problems


def test_batch_problems_are_prefixed_with_the_session_index() -> None:
    """In a batch, every problem is located as ``sessions[i].field``."""
    message = batch_msg(
        session_dict(),
        session_dict(source_ip="nope"),
        session_dict(),
        session_dict(user={"email": "nobody"}, trace_id="xyz"),
    )
    assert paths_of(message) == [
        "sessions[1].source_ip",
        "sessions[3].user.email",
        "sessions[3].trace_id",
    ]


def test_single_bad_session_rejects_the_whole_batch() -> None:
    """All or nothing: valid sessions next to a bad one are not returned."""
    with pytest.raises(InvalidInput):
        convert(batch_msg(session_dict(), session_dict(user={})))


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer s3cret-token", True),
        ("bearer s3cret-token", True),
        ("BEARER   s3cret-token ", True),
        ("Bearer s3cret-tokenx", False),
        ("Basic s3cret-token", False),
        ("s3cret-token", False),
        ("Bearer \udcff", False),
        ("", False),
        (None, False),
    ],
)
def test_token_auth(header: str | None, allowed: bool) -> None:
    """The scheme is case-insensitive; the token must match exactly; odd bytes never raise."""
    assert BearerToken("s3cret-token").allows(header) is allowed


@pytest.mark.parametrize(
    "start",
    ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2020-01-01T00:00:00Z"],
    ids=["year-1", "year-9999", "years-ago"],
)
def test_a_start_far_from_now_is_refused(start: str) -> None:
    """Sessions and events start within 7 days of the service's now, or are refused."""
    assert ("start", "must be within 7 days of now") in problems_of(
        session_msg(start=start, kind="request")
    )


def test_a_start_within_a_week_is_kept() -> None:
    """Six days either side is still accepted."""
    for days in (-6, 6):
        at = NOW_NS + days * 86_400 * 1_000_000_000
        stamp = Timestamp()
        stamp.FromNanoseconds(at)
        [session] = convert(session_msg(start=stamp.ToJsonString(), kind="request"))
        assert session.start_ns == at


@pytest.mark.parametrize("kind", ["request", "call"])
def test_event_kinds_are_points_in_time(kind: str) -> None:
    """Both event kinds are kept as given, start == end; with an end they are refused."""
    [session] = convert(session_msg(start=T0, kind=kind))
    assert session.kind == kind and session.start_ns == session.end_ns == T0_NS
    assert paths_of(session_msg(start=T0, kind=kind, ttl_seconds=5)) == ["end"]


def test_an_unknown_kind_names_the_three_kinds() -> None:
    """A kind that is none of session, request or call is refused with the list."""
    assert ("kind", "must be session, request or call") in problems_of(session_msg(kind="burst"))
