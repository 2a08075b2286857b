"""Tables for the attribution chain: each link, their order, holding and ambiguity."""

from __future__ import annotations

from typing import Any

import pytest
from correlation_kit import (
    ANA,
    GW,
    MIKE,
    MS,
    T0,
    Kit,
    S,
    attrs,
    event,
    gateway_span,
    kv,
    request_of,
    sent,
    spans_of,
    webui_span,
    who,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from processor.identity.directory import parse_directory
from processor.model import Session, User
from processor.wire.received import Received

MIKE_EVENT = event(MIKE, T0 - 300 * MS)
LONG_MIKE = Session(GW, MIKE, T0 - 600 * S, T0 + 600 * S)
DIRECTORY = parse_directory(
    {
        "users": [
            {
                "id": "bot",
                "email": "ci-bot@example.com",
                "team": "platform",
                "principals": {"jwt.sub": ["auth0|bot"]},
            },
            {"id": "lab", "email": "lab@example.com", "addresses": ["10.20.0.0/16"]},
            {"id": "gw", "email": "gw-owner@example.com", "addresses": [GW]},
        ]
    }
)


# ---------------------------------------------------------------- the span link


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ([kv("user.email", "ana.lima@example.com")], ("ana.lima@example.com", None)),
        ([kv("enduser.id", "ana")], (None, "ana")),
        (
            [kv("client.user.id", "ana"), kv("client.user.email", "ana.lima@example.com")],
            ("ana.lima@example.com", "ana"),
        ),
        (
            [kv("http.request.header.x-openwebui-user-email", ["ana.lima@example.com"])],
            ("ana.lima@example.com", None),
        ),
        (
            [kv("x-openwebui-user-id", "ana"), kv("x-openwebui-user-name", "Ana%20Lima")],
            (None, "ana"),
        ),
        ([kv("employee.mail", "ana.lima@example.com")], ("ana.lima@example.com", None)),
    ],
    ids=["user.email", "enduser.id", "client.user", "header-array", "plain-header", "mapped"],
)
def test_span_identity_is_normalised(
    identity: list[KeyValue], expected: tuple[str | None, str | None]
) -> None:
    """Identity already on the span wins over a session and is written as user.* keys."""
    kit = Kit(extra_identity={"employee.mail": "email"})
    kit.add(MIKE_EVENT)
    out = kit.receive(request_of(gateway_span(extra=identity)))
    (span,) = sent(out)
    got = attrs(span)
    email, user_id = expected
    assert got.get("user.email") == email
    assert got.get("user.id") == user_id
    assert (got["user.attribution.method"], got["user.attribution.confidence"]) == ("span", "exact")


def test_url_encoded_name_is_decoded() -> None:
    """Open WebUI's URL-encoded name header becomes a readable user.name."""
    kit = Kit()
    extra = [
        kv("x-openwebui-user-email", "jose@example.com"),
        kv("x-openwebui-user-name", "Jos%C3%A9%20P%C3%A9rez"),
    ]
    (span,) = sent(kit.receive(request_of(gateway_span(extra=extra))))
    assert attrs(span)["user.name"] == "José Pérez"


def test_producer_values_are_never_overwritten() -> None:
    """A key the producer set keeps its value; only absent keys are added."""
    kit = Kit()
    extra = [kv("user.email", "ana.lima@example.com"), kv("user.attribution.method", "gateway")]
    (span,) = sent(kit.receive(request_of(gateway_span(extra=extra))))
    keys = [a.key for a in span.attributes]
    assert keys.count("user.email") == 1 and keys.count("user.attribution.method") == 1
    assert attrs(span)["user.attribution.method"] == "gateway"


def test_resource_identity_applies_to_its_spans() -> None:
    """Identity on the resource attributes every span under it."""
    kit = Kit()
    req = request_of(gateway_span(), resource=[kv("enduser.id", "svc-bot")])
    (span,) = sent(kit.receive(req))
    assert attrs(span)["enduser.id"] == "svc-bot"


# ---------------------------------------------------------------- the trace link


def test_trace_identity_first_then_gateway_span() -> None:
    """Open WebUI's span arriving first attributes the gateway span of its trace at once."""
    kit = Kit(hold_ms=3000)
    kit.receive(request_of(webui_span(7, ANA), service="open-webui"))
    out = kit.receive(request_of(gateway_span(trace=7)))
    assert out.held == 0
    assert [who(s) for s in sent(out)] == [("ana.lima@example.com", "trace", "exact")]


def test_gateway_span_first_is_released_by_trace_identity() -> None:
    """A held gateway span is released the moment its trace's identity arrives."""
    kit = Kit(hold_ms=3000)
    kit.add(MIKE_EVENT)  # a session says mike; the trace says ana, and wins
    first = kit.receive(request_of(gateway_span(trace=7)))
    assert first.held == 1 and first.current is None
    second = kit.receive(request_of(webui_span(7, ANA), service="open-webui"), now=T0 + S)
    assert second.released_early == 1
    spans = sent(second)
    assert sorted(who(s) for s in spans) == [
        ("ana.lima@example.com", "span", "exact"),
        ("ana.lima@example.com", "trace", "exact"),
    ]


def test_session_event_with_trace_id_attributes_its_trace() -> None:
    """An event carrying the trace id attributes that trace's spans exactly."""
    kit = Kit(hold_ms=3000)
    kit.receive(request_of(gateway_span(trace=9)))
    out = kit.add(event(ANA, T0, trace_id=(9).to_bytes(16, "big").hex()))
    assert [who(s) for s in sent(out)] == [("ana.lima@example.com", "trace", "exact")]


def test_trace_identity_that_never_comes_falls_back_at_deadline() -> None:
    """Without trace identity, the span is released at its deadline by the session link."""
    kit = Kit(hold_ms=3000)
    kit.add(MIKE_EVENT)
    kit.receive(request_of(gateway_span(trace=5)))
    assert sent(kit.correlator.tick(T0 + 2999 * MS)) == []
    out = kit.correlator.tick(T0 + 3000 * MS)
    assert out.released_deadline == 1
    assert [who(s) for s in sent(out)] == [("mike.chen@example.com", "session", "high")]


# ---------------------------------------------------------------- the session link


@pytest.mark.parametrize(
    ("event_offset_ms", "expected"),
    [
        (-300, "mike.chen@example.com"),  # event 300 ms before the span: normal
        (-4900, "mike.chen@example.com"),  # near the end of the window
        (-5100, None),  # outside the 5 s window
        (400, "mike.chen@example.com"),  # event stamped after the span: skewed clock
        (600, None),  # beyond the 500 ms skew allowance
    ],
)
def test_request_event_window_and_skew(event_offset_ms: int, expected: str | None) -> None:
    """A span matches an event when it starts within the window after it, skew allowed."""
    kit = Kit()
    kit.add(event(MIKE, T0 + event_offset_ms * MS))
    (span,) = sent(kit.receive(request_of(gateway_span())))
    assert who(span)[0] == expected


def test_one_event_several_spans() -> None:
    """A chat message causing several LLM calls attributes all of them."""
    kit = Kit()
    kit.add(MIKE_EVENT)
    req = request_of(*(gateway_span(trace=i, start=T0 + i * 700 * MS) for i in range(4)))
    spans = sent(kit.receive(req))
    assert [who(s)[0] for s in spans] == ["mike.chen@example.com"] * 4


@pytest.mark.parametrize(
    ("mike_model", "ana_model", "expected"),
    [
        ("gpt-4o", "claude-sonnet-4-5", ("mike.chen@example.com", "session", "high")),
        ("openai/gpt-4o", "claude-sonnet-4-5", ("mike.chen@example.com", "session", "high")),
        ("", "claude-sonnet-4-5", ("mike.chen@example.com", "session", "high")),
        ("gpt-4o", "gpt-4o", (None, "session", "ambiguous")),
        ("", "", (None, "session", "ambiguous")),
    ],
)
def test_two_users_in_one_window(
    mike_model: str, ana_model: str, expected: tuple[str | None, str, str]
) -> None:
    """A matching model narrows two users to one; otherwise nobody is attached."""
    kit = Kit()
    kit.add(event(MIKE, T0 - 300 * MS, mike_model), event(ANA, T0 - 200 * MS, ana_model))
    (span,) = sent(kit.receive(request_of(gateway_span(model="gpt-4o"))))
    assert who(span) == expected


@pytest.mark.parametrize(
    ("policy", "email", "count", "candidates"),
    [
        ("skip", None, "2", None),
        ("nearest", "ana.lima@example.com", "2", None),
        ("candidates", None, "2", "ana.lima@example.com,mike.chen@example.com"),
    ],
)
def test_ambiguity_policies(
    policy: str, email: str | None, count: str, candidates: str | None
) -> None:
    """Each policy is applied and explained on the span itself."""
    kit = Kit(policy=policy)  # type: ignore[arg-type]
    kit.add(event(MIKE, T0 - 900 * MS), event(ANA, T0 - 100 * MS))
    (span,) = sent(kit.receive(request_of(gateway_span())))
    got = attrs(span)
    assert got.get("user.email") == email
    assert got["user.attribution.confidence"] == "ambiguous"
    assert got["user.attribution.candidate_count"] == count
    assert got.get("user.attribution.candidates") == candidates


def test_long_session_when_no_event() -> None:
    """Without request events, one long session covering the span attributes it."""
    kit = Kit()
    kit.add(LONG_MIKE)
    (span,) = sent(kit.receive(request_of(gateway_span())))
    assert who(span) == ("mike.chen@example.com", "session", "high")


def test_events_take_precedence_over_long_sessions() -> None:
    """A request event is sharper evidence than who is logged in on the address."""
    kit = Kit()
    kit.add(LONG_MIKE, Session(GW, ANA, T0 - 600 * S, T0 + 600 * S), event(ANA, T0 - 100 * MS))
    (span,) = sent(kit.receive(request_of(gateway_span())))
    assert who(span) == ("ana.lima@example.com", "session", "high")


def test_events_arriving_later_are_weighed_at_the_deadline() -> None:
    """Events after the span never release it early: a second user's event still counts."""
    kit = Kit(hold_ms=3000)
    assert kit.receive(request_of(gateway_span(trace=1), gateway_span(trace=2))).held == 2
    early = kit.add(event(MIKE, T0 - 300 * MS), now=T0 + S)
    assert early.released_early == 0 and sent(early) == []
    kit.add(event(ANA, T0 - 200 * MS), now=T0 + S + 100 * MS)
    out = kit.correlator.tick(T0 + 3 * S)
    assert [who(s) for s in sent(out)] == [(None, "session", "ambiguous")] * 2


def test_event_with_trace_id_releases_early() -> None:
    """An event naming the trace is exact: its spans go out at once."""
    kit = Kit(hold_ms=3000)
    kit.receive(request_of(gateway_span(trace=5)))
    out = kit.add(event(MIKE, T0 - 300 * MS, trace_id=(5).to_bytes(16, "big").hex()))
    assert out.released_early == 1
    assert [who(s) for s in sent(out)] == [(MIKE.email, "trace", "exact")]


# ---------------------------------------------------------------- the directory link


@pytest.mark.parametrize(
    ("span_kwargs", "expected"),
    [
        ({"extra": [kv("jwt.sub", "auth0|bot")]}, ("ci-bot@example.com", "directory", "exact")),
        ({"src": "10.20.3.4:5000"}, ("lab@example.com", "directory", "high")),
        ({"src": "10.21.3.4:5000"}, (None, None, None)),
    ],
)
def test_directory_link(span_kwargs: dict[str, Any], expected: tuple[str | None, ...]) -> None:
    """Principals map exactly, addresses and CIDRs with high confidence."""
    kit = Kit(directory=DIRECTORY)
    (span,) = sent(kit.receive(request_of(gateway_span(**span_kwargs))))
    assert who(span) == expected


def test_directory_team_is_written() -> None:
    """A directory user's team lands on the span as user.team."""
    kit = Kit(directory=DIRECTORY)
    (span,) = sent(kit.receive(request_of(gateway_span(extra=[kv("jwt.sub", "auth0|bot")]))))
    assert attrs(span)["user.team"] == "platform"


# ---------------------------------------------------------------- chain order


@pytest.mark.parametrize(
    ("with_span", "with_trace", "with_event", "expected_method"),
    [
        (True, True, True, "span"),
        (False, True, True, "trace"),
        (False, False, True, "session"),
        (False, False, False, "directory"),
    ],
)
def test_chain_order(
    with_span: bool, with_trace: bool, with_event: bool, expected_method: str
) -> None:
    """The first link that answers wins: span, trace, session, directory."""
    kit = Kit(directory=DIRECTORY)
    if with_trace:
        kit.receive(request_of(webui_span(3, ANA), service="open-webui"))
    if with_event:
        kit.add(MIKE_EVENT)
    extra = [kv("user.email", "bob@example.com")] if with_span else []
    (span,) = sent(kit.receive(request_of(gateway_span(trace=3, extra=extra))))
    assert who(span)[1] == expected_method


# ---------------------------------------------------------------- holding


def test_buffer_full_forces_oldest_out_never_drops() -> None:
    """Past the bound, the oldest held span is forwarded (attributed as far as known)."""
    kit = Kit(hold_ms=3000, max_held=2)
    kit.add(MIKE_EVENT)
    outs = [kit.receive(request_of(gateway_span(trace=i, start=T0 + i * MS))) for i in range(3)]
    assert outs[2].forced_out == 1
    forced = sent(outs[2])
    assert [s.trace_id for s in forced] == [(0).to_bytes(16, "big")]
    assert kit.correlator.held == 2


def test_drain_releases_everything() -> None:
    """On shutdown every held span comes out."""
    kit = Kit(hold_ms=3000)
    for i in range(3):
        kit.receive(request_of(gateway_span(trace=i)))
    out = kit.correlator.drain()
    assert len(sent(out)) == 3 and kit.correlator.held == 0


def test_held_span_arrives_intact() -> None:
    """Holding only appends attributes: resource, scope, schema urls and the span survive."""
    kit = Kit(hold_ms=3000)
    kit.add(MIKE_EVENT)
    original = request_of(gateway_span(), resource=[kv("host.name", "gw-1")])
    received = ExportTraceServiceRequest()
    received.CopyFrom(original)
    kit.receive(received)
    out = kit.correlator.tick(T0 + 10 * S)
    (payload,) = out.released
    got = ExportTraceServiceRequest.FromString(payload.data)
    span = got.resource_spans[0].scope_spans[0].spans[0]
    n = len(original.resource_spans[0].scope_spans[0].spans[0].attributes)
    assert attrs(span)["user.email"] == "mike.chen@example.com"
    del span.attributes[n:]
    assert got == original


def test_unchanged_request_is_forwarded_as_received() -> None:
    """With nothing to write and nothing held, the exact received bytes go on."""
    kit = Kit()
    req = request_of(gateway_span(src="10.99.0.1:1"))
    raw = req.SerializeToString()
    out = kit.correlator.receive(Received.parse(raw), T0)
    assert out.current is not None and out.current.data is raw
    assert out.unattributed == 1


def test_mixed_request_keeps_unheld_spans_now() -> None:
    """Spans with identity go now; the others wait, and both keep their resource."""
    kit = Kit(hold_ms=3000)
    req = request_of(
        gateway_span(trace=1, extra=[kv("user.email", "a@example.com")]), gateway_span(trace=2)
    )
    out = kit.receive(req)
    assert out.held == 1 and out.current is not None and out.current.spans == 1
    assert [s.trace_id[-1] for s in sent(out)] == [1]


def test_no_address_is_counted() -> None:
    """A span with no address and no identity is forwarded and counted."""
    kit = Kit()
    out = kit.receive(request_of(gateway_span(src=None)))
    assert out.no_address == 1 and out.unattributed == 1


def test_users_without_email_use_id() -> None:
    """enduser.id falls back to the email when a user has no id."""
    kit = Kit()
    kit.add(event(User(email="x@example.com"), T0 - 100 * MS))
    (span,) = sent(kit.receive(request_of(gateway_span())))
    assert attrs(span)["enduser.id"] == "x@example.com"


def test_every_written_key_contains_user() -> None:
    """The request-level pre-check for present keys relies on every written key holding "user"."""
    from processor.correlate.identity import WRITTEN_KEYS

    assert all("user" in key for key in WRITTEN_KEYS)


@pytest.mark.parametrize(
    ("path", "name"),
    [("processor.correlate.message_path", "_drop_empty"), ("processor.correlate.batch", "rewrite")],
    ids=["message path", "column path"],
)
def test_failed_request_undoes_its_holds_and_keeps_released_spans(
    monkeypatch: pytest.MonkeyPatch, path: str, name: str
) -> None:
    """A request that fails as a whole leaves nothing held, and forced-out spans still go."""
    from processor.correlate.correlator import CorrelationFailed

    kit = Kit(hold_ms=3000, max_held=1)
    kit.receive(request_of(gateway_span(trace=1)))
    assert kit.correlator.held == 1

    def boom(*args: Any) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(f"{path}.{name}", boom)
    if "message_path" in path:  # columns cannot vouch for the marker key: the message path
        other = gateway_span(trace=3, extra=[kv("\x00user-enricher/span-end", "x")])
    else:  # a known trace is attributed now, so the request is rewritten
        kit.correlator.learn_trace((3).to_bytes(16, "big"), ANA, T0)
        other = gateway_span(trace=3)
    spans = [gateway_span(trace=2), other]
    with pytest.raises(CorrelationFailed) as caught:
        kit.correlator.receive(Received.of(request_of(*spans)), T0)
    (released,) = caught.value.released
    assert [s.trace_id[-1] for s in spans_of(released.data)] == [1]
    assert kit.correlator.held == 0
    assert sent(kit.correlator.drain()) == []
