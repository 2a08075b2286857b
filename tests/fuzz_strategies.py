"""Hypothesis strategies for the fuzz tests: OTLP messages, session pushes, webhooks, YAML."""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from processor.correlate.address import DEFAULT_ADDRESS_KEYS
from processor.correlate.identity import WRITTEN_KEYS
from processor.correlate.span_identity import BUILTIN_IDENTITY_KEYS
from processor.identity.intake.openwebui import KNOWN_EVENTS
from processor.identity.intake.validate import MAX_TTL_S

T = TypeVar("T")
MS = 1_000_000
S = 1000 * MS
T0 = 1_795_000_000 * S
U64 = 2**64 - 1


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Pick a strategy by weight (``st.one_of`` drops repeated branches, so cannot weigh)."""
    return st.sampled_from([s for w, s in choices for _ in range(w)]).flatmap(lambda s: s)


# ------------------------------------------------------------------ attribute keys and values

IDENTITY_KEYS: tuple[str, ...] = (*(k for k, _ in BUILTIN_IDENTITY_KEYS), "employee.mail")
OTHER_KEYS = ("gen_ai.request.model", "jwt.sub", "service.name", "http.method")
LOOKED_AT: tuple[str, ...] = (*DEFAULT_ADDRESS_KEYS, *IDENTITY_KEYS, *WRITTEN_KEYS, *OTHER_KEYS)

# Canonical addresses sessions are stored under; spans name them in every accepted form.
SESSION_IPS = ("172.18.0.5", "10.20.0.9", "fd00::7", "2001:db8::1", "fe80::1%eth0")
ADDRESS_TEXTS: tuple[str, ...] = (
    *SESSION_IPS,
    "172.18.0.5:40312",
    "10.20.0.9:0",
    "[fd00::7]:40312",
    "[2001:db8::1]",
    "[fe80::1%eth0]:8080",
    "::ffff:172.18.0.5",
    "[::ffff:10.20.0.9]:1",
    " 172.18.0.5 ",
    "",
    " ",
    "[",
    "[::1",
    "[::1]x",
    "[::1]:",
    "1.2.3.4:5:6",
    "999.1.1.1",
    "not-an-ip",
    "fe80::1%",
    "fe80::1%a%b",
)
IDENTITY_TEXTS = (
    "mike",
    "ana",
    "mike.chen@example.com",
    "ana.lima@example.com",
    "",
    "   ",
    "Ana%20Lima",
    "%ZZ%",
    "x" * 300,
    "admin",
)
MODELS = ("gpt-4o", "openai/gpt-4o", "GPT-4O", "claude", "")
TRACE_POOL = tuple(bytes([i]) * 16 for i in range(1, 4))


def _ip_forms(ip: Any, port: int) -> str:
    text = str(ip)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


# Mostly the first two session addresses, so that sessions there overlap and compete.
common_addresses = st.sampled_from(
    ["172.18.0.5:40312", "10.20.0.9", "[::ffff:172.18.0.5]:1", *ADDRESS_TEXTS[:10]]
)
address_texts = st.one_of(
    st.sampled_from(ADDRESS_TEXTS),
    st.ip_addresses().map(str),
    st.builds(_ip_forms, st.ip_addresses(), st.integers(0, 70_000)),
    st.text(max_size=16),
)
identity_texts = st.one_of(st.sampled_from(IDENTITY_TEXTS), st.text(max_size=12))


def _string(text: str) -> AnyValue:
    return AnyValue(string_value=text)


def _array(values: list[AnyValue]) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=values))


def _kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in pairs]))


def text_values(texts: st.SearchStrategy[str]) -> st.SearchStrategy[AnyValue]:
    """A string, or an array of strings (captured headers are arrays)."""
    return st.one_of(texts.map(_string), st.lists(texts.map(_string), max_size=3).map(_array))


keys = st.one_of(st.sampled_from(LOOKED_AT), st.text(max_size=10))
_scalars = st.one_of(
    st.builds(AnyValue),
    st.text(max_size=10).map(_string),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.floats().map(lambda f: AnyValue(double_value=f)),
    st.binary(max_size=10).map(lambda b: AnyValue(bytes_value=b)),
)
any_values: st.SearchStrategy[AnyValue] = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(_array),
        st.lists(st.tuples(keys, children), max_size=3).map(_kvlist),
    ),
    max_leaves=6,
)


def _kv(pair: tuple[str, AnyValue]) -> KeyValue:
    return KeyValue(key=pair[0], value=pair[1])


_generic = st.tuples(keys, any_values)
# Identity keys are one draw in seven, so that most spans need the later links.
attributes: st.SearchStrategy[KeyValue] = weighted(
    (1, st.tuples(st.sampled_from(DEFAULT_ADDRESS_KEYS), text_values(address_texts))),
    (1, st.tuples(st.sampled_from(IDENTITY_KEYS), text_values(identity_texts))),
    (1, st.tuples(st.just("gen_ai.request.model"), text_values(st.sampled_from(MODELS)))),
    (1, st.tuples(st.just("jwt.sub"), text_values(st.sampled_from(["auth0|bot", "auth0|x"])))),
    (3, _generic),
).map(_kv)
attribute_lists = st.lists(attributes, max_size=6)

# ------------------------------------------------------------------ spans and requests

# Ids a strict decoder accepts: empty or of their size (others are refused at the door).
trace_ids = st.one_of(
    st.sampled_from(TRACE_POOL), st.binary(min_size=16, max_size=16), st.just(b"")
)
span_ids = st.one_of(st.binary(min_size=8, max_size=8), st.just(b""))
times = weighted(
    (1, st.sampled_from([0, U64, T0])),
    (2, st.integers(T0 - 10 * S, T0 + 10 * S)),
    (2, st.integers(T0 - 3 * S, T0 + 3 * S)),
    (1, st.integers(0, U64)),
)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    """A span with random ids (any length), times, attributes, events, links and status."""
    span = Span(
        trace_id=draw(trace_ids),
        span_id=draw(span_ids),
        parent_span_id=draw(span_ids),
        trace_state=draw(st.text(max_size=6)),
        name=draw(st.text(max_size=8)),
        kind=cast("Span.SpanKind.ValueType", draw(st.sampled_from([0, 1, 2, 3, 4, 5, 99]))),
        start_time_unix_nano=draw(times),
        end_time_unix_nano=draw(times),
        dropped_attributes_count=draw(st.integers(0, 2**32 - 1)),
        flags=draw(st.integers(0, 2**32 - 1)),
    )
    span.attributes.extend(draw(attribute_lists))
    if draw(st.booleans()):  # most gateway spans name their source address
        key = draw(st.sampled_from(DEFAULT_ADDRESS_KEYS[:2]))
        at = draw(st.integers(0, len(span.attributes)))
        span.attributes.insert(at, KeyValue(key=key, value=_string(draw(common_addresses))))
    if draw(st.booleans()):
        for name, at in draw(st.lists(st.tuples(st.text(max_size=6), times), max_size=2)):
            span.events.add(name=name, time_unix_nano=at).attributes.extend(
                draw(st.lists(attributes, max_size=2))
            )
        for trace_id in draw(st.lists(trace_ids, max_size=2)):
            span.links.add(trace_id=trace_id, span_id=draw(span_ids))
        span.status.CopyFrom(
            Status(
                code=cast("Status.StatusCode.ValueType", draw(st.sampled_from([0, 1, 2, 7]))),
                message=draw(st.text(max_size=5)),
            )
        )
    return span


resource_attribute_lists = st.lists(
    st.one_of(
        attributes,
        st.tuples(st.just("service.name"), st.text(max_size=8).map(_string)).map(_kv),
    ),
    max_size=4,
)


@st.composite
def resources(draw: st.DrawFn) -> Resource | None:
    """A resource, or None for an absent one."""
    if draw(st.booleans()):
        return None
    resource = Resource(dropped_attributes_count=draw(st.integers(0, 3)))
    resource.attributes.extend(draw(resource_attribute_lists))
    return resource


@st.composite
def scopes(draw: st.DrawFn) -> InstrumentationScope | None:
    """An instrumentation scope, or None for an absent one."""
    if draw(st.booleans()):
        return None
    scope = InstrumentationScope(name=draw(st.text(max_size=6)), version=draw(st.text(max_size=4)))
    scope.attributes.extend(draw(st.lists(attributes, max_size=2)))
    return scope


schema_urls = st.sampled_from(["", "https://opentelemetry.io/schemas/1.27.0", "x"])


@st.composite
def requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """A structurally valid request: up to 2 resources x 2 scopes x 4 spans."""
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = req.resource_spans.add()
        resource = draw(resources())
        if resource is not None:
            rs.resource.CopyFrom(resource)
        rs.schema_url = draw(schema_urls)
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            scope = draw(scopes())
            if scope is not None:
                ss.scope.CopyFrom(scope)
            ss.schema_url = draw(schema_urls)
            ss.spans.extend(draw(st.lists(spans(), max_size=4)))
    return req


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes], edits: int = 4) -> bytes:
    """``base`` bytes after a few random byte edits (flip, insert, delete, cut, repeat)."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, edits))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "repeat"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif op == "cut":
            del data[at:]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


# ------------------------------------------------------------------ JSON bodies

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def _rfc3339(moment: datetime, fraction: str, zone: str) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction + zone


timestamps = st.one_of(
    st.builds(
        _rfc3339,
        st.datetimes(),
        st.sampled_from(["", ".5", ".123456789", ".1234567891"]),
        st.sampled_from(["Z", "+00:00", "-23:59", "+14:00", "z", ""]),
    ),
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "1970-01-01T00:00:00Z",
            "2026-11-17T12:00:00Z",
            "2026-11-17T12:00:01Z",
            "2026-11-24T12:00:00Z",
            "2026-11-24T12:00:01Z",
            "10000-01-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
        ]
    ),
    json_values,
)
ip_texts = st.one_of(
    st.sampled_from(SESSION_IPS),
    st.ip_addresses().map(str),
    st.sampled_from(["", "::ffff:10.0.0.1", "10.0.0.1:80", "[::1]", "fe80::1%x"]),
    st.text(max_size=10),
)
short_texts = st.one_of(st.sampled_from(["", "a", "é" * 129, "x" * 257]), st.text(max_size=12))


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the typed strategy, sometimes any JSON value."""
    return weighted((3, strategy), (1, json_values))


users = st.fixed_dictionaries(
    {},
    optional={
        "id": _maybe(short_texts),
        "email": _maybe(st.sampled_from(["a@b.example", "admin@localhost", "a@@b", "@", " a@b"])),
        "name": _maybe(short_texts),
        "roles": _maybe(st.lists(short_texts, max_size=34)),
    },
)
session_dicts = st.fixed_dictionaries(
    {},
    optional={
        "source_ip": _maybe(ip_texts),
        "sourceIp": _maybe(ip_texts),
        "user": _maybe(users),
        "start": timestamps,
        "end": timestamps,
        "ttl_seconds": _maybe(st.integers(-1, 2**33)),
        "ttlSeconds": _maybe(st.integers(-1, 2**33)),
        "model": _maybe(short_texts),
        "trace_id": _maybe(
            st.sampled_from(["0af7651916cd43dd8448eb211c80319c", "0" * 32, "0AF7" * 8, "xyz"])
        ),
        "kind": _maybe(st.sampled_from(["", "session", "request", "Request", "other"])),
        "chat_id": _maybe(short_texts),
        "message_id": _maybe(short_texts),
        "unknown_field": json_values,
    },
)
# Mostly valid sessions, so that acceptance is exercised as much as rejection.
WEEK_NS = MAX_TTL_S * 1_000_000_000
SESSION_T0_NS = 1_794_916_800 * 1_000_000_000  # 2026-11-17T12:00:00Z


def rfc3339(ns: int) -> str:
    """Unix nanoseconds as an RFC 3339 UTC timestamp with nanoseconds."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    moment = datetime(1970, 1, 1) + timedelta(seconds=seconds)
    return f"{moment.isoformat(timespec='seconds')}.{nanos:09d}Z"


@st.composite
def windows(draw: st.DrawFn) -> dict[str, Any]:
    """start / end / ttl_seconds around the 7-day limit (each may be left out)."""
    start = draw(st.integers(SESSION_T0_NS - WEEK_NS, SESSION_T0_NS + WEEK_NS))
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["start"] = rfc3339(start)
    choice = draw(st.sampled_from(["end", "ttl", "none"]))
    if choice == "end":
        length = draw(
            weighted(
                (2, st.sampled_from([0, 1, WEEK_NS - 1, WEEK_NS, WEEK_NS + 1, -1])),
                (1, st.integers(-WEEK_NS, 3 * WEEK_NS)),
            )
        )
        out["end"] = rfc3339(start + length)
    elif choice == "ttl":
        out["ttl_seconds"] = draw(
            weighted(
                (2, st.sampled_from([1, MAX_TTL_S - 1, MAX_TTL_S, MAX_TTL_S + 1])),
                (1, st.integers(0, 2 * MAX_TTL_S)),
            )
        )
    return out


@st.composite
def plausible_sessions(draw: st.DrawFn) -> dict[str, Any]:
    """A session dict with valid address and user, times near the limits."""
    session = draw(
        st.fixed_dictionaries(
            {
                "source_ip": st.one_of(st.sampled_from(SESSION_IPS), st.ip_addresses().map(str)),
                "user": st.fixed_dictionaries(
                    {"id": st.sampled_from(["u-1", "mike", ""])},
                    optional={
                        "email": st.sampled_from(["a@b.example", "admin@localhost"]),
                        "name": short_texts,
                        "roles": st.lists(st.sampled_from(["user", "admin"]), max_size=3),
                    },
                ),
            },
            optional={
                "model": st.sampled_from(MODELS),
                "trace_id": st.sampled_from(["0af7651916cd43dd8448eb211c80319c", "0AF7" * 8]),
                "kind": st.sampled_from(["", "session", "request"]),
            },
        )
    )
    session.update(draw(windows()))
    return dict(session)


session_documents = weighted(
    (1, json_values),
    (1, session_dicts),
    (3, plausible_sessions()),
    (
        2,
        st.fixed_dictionaries(
            {
                "sessions": weighted(
                    (3, st.lists(st.one_of(plausible_sessions(), session_dicts), max_size=4)),
                    (1, json_values),
                )
            }
        ),
    ),
)


def dumps(value: Any) -> bytes:
    """JSON bytes as Python writes them (NaN and Infinity included, as json.loads reads)."""
    return json.dumps(value).encode()


def json_bodies(documents: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Encoded documents, edited documents, and raw bytes."""
    encoded = documents.map(dumps)
    return weighted((3, encoded), (1, mutated(encoded)), (1, st.binary(max_size=64)))


# ------------------------------------------------------------------ Open WebUI webhook events

actors = st.fixed_dictionaries(
    {},
    optional={
        "id": _maybe(st.sampled_from(["u-1", "", "  ", "x" * 300])),
        "email": _maybe(st.sampled_from(["mike.chen@example.com", "", "not-an-email"])),
        "name": _maybe(short_texts),
        "role": _maybe(st.sampled_from(["user", "admin", ""])),
        "type": json_values,
    },
)
# Magnitudes past the float range are covered separately (a regression property).
created_ats = st.one_of(
    st.integers(-(10**300), 10**300),
    st.integers(1_795_000_000 - 120, 1_795_000_000 + 120),
    st.floats(),
    json_values,
)
events = st.fixed_dictionaries(
    {"event": st.one_of(st.sampled_from(sorted(KNOWN_EVENTS | {"chat.deleted", "", "auth"})))},
    optional={
        "actor": _maybe(actors),
        "created_at": created_ats,
        "data": _maybe(
            st.fixed_dictionaries({}, optional={"model": json_values, "model_id": json_values})
        ),
        "action": json_values,
        "user": json_values,
        "id": json_values,
    },
)
plausible_events = st.fixed_dictionaries(
    {
        "event": st.sampled_from(sorted(KNOWN_EVENTS)),
        "actor": st.fixed_dictionaries(
            {"id": st.sampled_from(["u-1", ""])},
            optional={"email": st.sampled_from(["mike.chen@example.com", ""])},
        ),
    },
    optional={
        "created_at": st.one_of(
            st.integers(1_795_000_000 - 70, 1_795_000_000 + 70),
            st.floats(1_795_000_000 - 70, 1_795_000_000 + 70),
        ),
        "data": st.fixed_dictionaries({}, optional={"model": json_values, "model_id": json_values}),
    },
)
webhook_documents = weighted(
    (4, plausible_events),
    (1, events),
    (1, events.map(lambda d: {k: v for k, v in d.items() if k != "event"})),
    (1, st.fixed_dictionaries({"event": json_values, "actor": actors})),
    (1, json_values),
)

# ------------------------------------------------------------------ YAML-like directory documents

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.binary(max_size=6),
    st.dates(),
    st.datetimes(),
)
yaml_values: st.SearchStrategy[Any] = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none()),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)
network_texts = st.one_of(
    ip_texts,
    st.ip_addresses().map(str),
    st.builds(lambda ip, n: f"{ip}/{n}", st.ip_addresses(), st.integers(-1, 130)),
    st.builds(
        lambda ip, n: str(ipaddress.ip_network(f"{ip}/{min(n, ip.max_prefixlen)}", strict=False)),
        st.ip_addresses(),
        st.integers(0, 128),
    ),
    st.sampled_from(["10.0.0.0/8", "10.0.0.1/8", "fd00::/64", "::ffff:10.0.0.5", "0.0.0.0/0"]),
)
entries = st.fixed_dictionaries(
    {},
    optional={
        "id": _maybe(st.sampled_from(["a", "b", "", "  "])),
        "email": _maybe(st.sampled_from(["a@example.com", ""])),
        "name": yaml_values,
        "team": _maybe(short_texts),
        "roles": _maybe(st.lists(short_texts, max_size=3)),
        "addresses": _maybe(st.lists(network_texts, max_size=3)),
        "principals": _maybe(
            st.dictionaries(
                st.sampled_from(["jwt.sub", " jwt.sub", "api.key"]),
                _maybe(st.lists(st.sampled_from(["s1", "s2", " s1"]), max_size=3)),
                max_size=2,
            )
        ),
        "extra": yaml_values,
    },
)
plausible_entries = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", ""]), "email": st.sampled_from(["a@example.com", ""])},
    optional={
        "team": short_texts,
        "roles": st.lists(st.sampled_from(["admin", " user "]), max_size=2),
        "addresses": st.lists(network_texts, max_size=3),
        "principals": st.dictionaries(
            st.sampled_from(["jwt.sub", "api.key"]),
            st.lists(st.text(max_size=4), max_size=2),
            max_size=2,
        ),
    },
)
directory_documents = weighted(
    (1, yaml_values),
    (1, st.fixed_dictionaries({}, optional={"users": _maybe(st.lists(entries, max_size=4))})),
    (2, st.fixed_dictionaries({"users": st.lists(plausible_entries, max_size=3)})),
)
