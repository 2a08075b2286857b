"""Bad input does not hurt: property-based tests over every parser of outside input.

Each input is either processed or rejected with the module's own error type (DecodeError
for OTLP bytes, InvalidInput for API bodies, ConfigError for the directory): never another
exception. Hypothesis runs derandomized, so CI sees the same examples on every run.

Bugs the fuzzing found are kept at the end of the file as regression properties, each
with the minimal reproducing input as an explicit example.
"""

from __future__ import annotations

import gc
import ipaddress
import random
import tracemalloc
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from correlation_kit import ANA, GW, MIKE, Kit, event, gateway_span, kv, request_of
from fuzz_strategies import (
    MS,
    SESSION_IPS,
    T0,
    TRACE_POOL,
    U64,
    S,
    attribute_lists,
    directory_documents,
    dumps,
    json_bodies,
    mutated,
    requests,
    resources,
    schema_urls,
    scopes,
    session_documents,
    spans,
    webhook_documents,
    weighted,
)
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from processor.correlate import address as address_module
from processor.correlate import batch as batch_module
from processor.correlate import decided as decided_module
from processor.correlate import identity as identity_module
from processor.correlate import usage as usage_module
from processor.correlate.address import DEFAULT_ADDRESS_KEYS, normalize_ip
from processor.correlate.correlator import Correlator, Outcome, Payload, Rules
from processor.correlate.hold import HoldBuffer
from processor.correlate.identity import WRITTEN_KEYS
from processor.correlate.resolve import Resolver
from processor.correlate.span_identity import BUILTIN_IDENTITY_KEYS, IdentityReader
from processor.errors import ConfigError, InvalidInput
from processor.identity import directory as directory_module
from processor.identity.directory import Directory, parse_directory
from processor.identity.intake.openwebui import Close, Ignore, Store, interpret, parse_body
from processor.identity.intake.validate import MAX_TTL_S, parse_json_body, to_sessions
from processor.identity.sessions.memory import MemorySessionStore
from processor.identity.sessions.traces import TraceIdentities
from processor.model import Session, User
from processor.wire import columns as columns_module
from processor.wire.encoding import Origin, build_request
from processor.wire.received import Received

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Examples that build many protobuf messages each.
FUZZ_SLOW = settings(FUZZ, max_examples=150)

WRITTEN = frozenset(WRITTEN_KEYS)
# Keys we write that also carry producer identity: a producer's value must survive as is.
GUARDED = WRITTEN & frozenset(k for k, _ in BUILTIN_IDENTITY_KEYS)
NS = 1_000_000_000
PLAT = User(id="gw", email="gw-owner@example.com", team="platform")
DIRECTORY = parse_directory(
    {
        "users": [
            {"id": "bot", "email": "bot@example.com", "principals": {"jwt.sub": ["auth0|bot"]}},
            {"id": "lab", "email": "lab@example.com", "addresses": ["10.20.0.0/16", "fd00::/64"]},
            {"id": PLAT.id, "email": PLAT.email, "team": PLAT.team, "addresses": [GW]},
        ]
    }
)

# ====================================================================== 1. OTLP -> correlator


@dataclass(frozen=True)
class AddSession:
    """An identity source stores a session or request event at ``at``."""

    session: Session
    at: int


@dataclass(frozen=True)
class Receive:
    """The receiver hands over a request at ``at``."""

    request: ExportTraceServiceRequest
    at: int


@dataclass(frozen=True)
class Tick:
    """The hold ticker runs at ``at``."""

    at: int


Step = AddSession | Receive | Tick

kits = st.builds(
    Kit,
    hold_ms=st.sampled_from([0, 1, 6000]),
    policy=st.sampled_from(["skip", "nearest", "candidates"]),
    max_held=st.sampled_from([1, 2, 1000]),
    directory=st.sampled_from([Directory.empty(), DIRECTORY]),
    extra_identity=st.sampled_from([{}, {"employee.mail": "email"}]),
)
nows = weighted((4, st.integers(T0 - 10 * S, T0 + 10 * S)), (1, st.sampled_from([0, U64])))
users = st.sampled_from([MIKE, ANA, PLAT, User(email="x@y"), User(id="i-only")])


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    """A valid session or request event on a known address, near T0 or at the extremes."""
    ip = draw(weighted((2, st.sampled_from(SESSION_IPS[:2])), (1, st.sampled_from(SESSION_IPS))))
    extremes = st.sampled_from([0, U64])
    trace_id = draw(st.sampled_from(["", *(t.hex() for t in TRACE_POOL)]))
    model = draw(st.sampled_from(["", "gpt-4o", "openai/gpt-4o", "claude"]))
    user = draw(users)
    if draw(st.booleans()):
        at = draw(weighted((4, st.integers(T0 - 10 * S, T0 + 10 * S)), (1, extremes)))
        return Session(ip, user, at, at, model, trace_id, "request")
    # Long sessions mostly start before the spans and last past them.
    start = draw(weighted((4, st.integers(T0 - 60 * S, T0)), (1, extremes)))
    lasting = weighted(
        (3, st.sampled_from([90 * S, 3600 * S, MAX_TTL_S * NS])),
        (1, st.integers(0, MAX_TTL_S * NS)),
    )
    return Session(ip, user, start, start + draw(lasting), model, trace_id)


@st.composite
def gateway_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    """AgentGateway-like traffic: no identity, a known source address, near the sessions."""
    batch = []
    for _ in range(draw(st.integers(1, 3))):
        span = gateway_span(
            trace=draw(st.integers(1, 4)),
            start=draw(st.integers(T0 - 5 * S, T0 + 5 * S)),
            src=draw(st.sampled_from([f"{GW}:40312", "10.20.0.9:1", "[fd00::7]:2", None])),
            model=draw(st.sampled_from(["gpt-4o", "claude", ""])),
            extra=draw(attribute_lists),
        )
        batch.append(span)
    return request_of(*batch)


steps: st.SearchStrategy[Step] = weighted(
    (2, st.builds(AddSession, sessions(), nows)),
    (1, st.builds(Receive, requests(), nows)),
    (2, st.builds(Receive, gateway_requests(), nows)),
    (1, st.builds(Tick, nows)),
)


def spans_in(request: ExportTraceServiceRequest) -> list[Span]:
    """Every span of ``request``, in order."""
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def sent_spans(outcomes: Iterable[Outcome]) -> list[Span]:
    """Every span the outcomes send; each payload must decode and count its spans right."""
    out: list[Span] = []
    for outcome in outcomes:
        payloads: list[Payload] = [outcome.current] if outcome.current else []
        for payload in [*payloads, *outcome.released]:
            got = spans_in(ExportTraceServiceRequest.FromString(payload.data))
            assert len(got) == payload.spans
            out.extend(got)
    return out


def _without_tail(span: Span, keep: int) -> bytes:
    copy = Span()
    copy.CopyFrom(span)
    del copy.attributes[keep:]
    return copy.SerializeToString(deterministic=True)


def label(outcomes: Iterable[Outcome]) -> None:
    """Report which paths an example took (shown by --hypothesis-show-statistics)."""
    for o in outcomes:
        for (method, confidence), n in o.attributed.items():
            if n:
                note(f"attributed {method}/{confidence}")
        for name in ("held", "released_early", "released_deadline", "forced_out", "no_address"):
            if getattr(o, name):
                note(name)


def check_conservation(originals: list[Span], sent: list[Span], *, guarded: bool) -> None:
    """Every span that went in comes out exactly once, with only attributes appended.

    Output spans are matched to inputs by everything but the appended attributes, so
    spans need no tags. With ``guarded``, a producer's identity keys (user.email, ...)
    are never written a second time, so their values survive exactly.
    """
    pending = [(s, s.SerializeToString(deterministic=True)) for s in originals]
    assert len(sent) == len(pending)
    for span in sent:
        # The input with the most attributes that matches: when one input's attributes
        # are a prefix of another's (same ids otherwise), the shorter would also match.
        matches = [
            i
            for i, (orig, encoded) in enumerate(pending)
            if len(span.attributes) >= len(orig.attributes)
            and _without_tail(span, len(orig.attributes)) == encoded
        ]
        index = max(matches, key=lambda i: len(pending[i][0].attributes), default=None)
        assert index is not None, f"span came out changed or twice: {span}"
        orig, _ = pending.pop(index)
        n = len(orig.attributes)
        added = [a.key for a in span.attributes[n:]]
        assert set(added) <= WRITTEN, added
        assert len(added) == len(set(added)), added
        if guarded:
            before = [a.key for a in orig.attributes]
            assert not set(added) & set(before) & GUARDED, (before, added)
            emails = [a.SerializeToString() for a in orig.attributes if a.key == "user.email"]
            after = [a.SerializeToString() for a in span.attributes if a.key == "user.email"]
            assert not emails or after == emails
    assert not pending


@settings(FUZZ, max_examples=300)
@given(
    kit=kits,
    known=st.lists(st.builds(AddSession, sessions(), nows), max_size=3),
    script=st.lists(steps, min_size=1, max_size=5),
)
def test_correlator_conserves_random_requests(
    kit: Kit, known: list[AddSession], script: list[Step]
) -> None:
    """Random requests, sessions and ticks: nothing raises, every span leaves once, intact."""
    originals: list[Span] = []
    outcomes: list[Outcome] = []
    counted = 0
    for step in [*known, *script]:
        if isinstance(step, AddSession):
            kit.store.add(step.session)
            outcomes.append(kit.correlator.on_session(step.session, step.at))
        elif isinstance(step, Receive):
            raw = step.request.SerializeToString()
            originals.extend(spans_in(ExportTraceServiceRequest.FromString(raw)))
            # A fresh decode: the correlator edits the request in place.
            got = kit.correlator.receive(Received.parse(raw), step.at)
            counted += got.spans
            outcomes.append(got)
        else:
            outcomes.append(kit.correlator.tick(step.at))
    outcomes.append(kit.correlator.drain())
    label(outcomes)
    assert kit.correlator.held == 0
    assert counted == len(originals)
    check_conservation(originals, sent_spans(outcomes), guarded=True)


encoded_requests = requests().map(lambda r: r.SerializeToString())
raw_requests = st.one_of(
    st.binary(max_size=200),
    mutated(encoded_requests, edits=1),
    mutated(encoded_requests),
    # Concatenated messages are valid protobuf: they merge.
    st.builds(lambda a, b: a + b, encoded_requests, mutated(encoded_requests, edits=1)),
)


@FUZZ
@given(kit=kits, raw=raw_requests, now=nows)
def test_correlator_takes_arbitrary_bytes(kit: Kit, raw: bytes, now: int) -> None:
    """Bytes either fail to decode (DecodeError) or go through the correlator whole."""
    try:
        request = ExportTraceServiceRequest.FromString(raw)
    except DecodeError:
        return
    kit.add(event(MIKE, T0 - 300 * MS), Session(GW, ANA, T0 - 60 * S, T0 + 60 * S))
    originals = spans_in(ExportTraceServiceRequest.FromString(raw))
    outcomes = [kit.correlator.receive(Received.of(request), now), kit.correlator.drain()]
    note(f"decoded, {len(originals)} spans" if len(originals) < 3 else "decoded, 3+ spans")
    label(outcomes)
    check_conservation(originals, sent_spans(outcomes), guarded=True)


@FUZZ
@given(kit=kits, raw=raw_requests, now=nows)
def test_what_the_door_accepts_a_strict_decoder_accepts_downstream(
    kit: Kit, raw: bytes, now: int
) -> None:
    """Differential: the door (``Received.parse``) accepts only what a strict decoder does,
    and every payload sent on for an accepted request passes the same door again, span for
    span. So an acknowledged span is never refused by Jaeger or a Collector."""
    try:
        received = Received.parse(raw)
    except DecodeError:
        return
    ExportTraceServiceRequest.FromString(raw)  # the reference decoder agrees
    kit.add(event(MIKE, T0 - 300 * MS), Session(GW, ANA, T0 - 60 * S, T0 + 60 * S))
    outcomes = [kit.correlator.receive(received, now), kit.correlator.drain()]
    sent = 0
    for outcome in outcomes:
        for payload in ([outcome.current] if outcome.current else []) + outcome.released:
            again = Received.parse(payload.data)  # raises if the downstream would refuse it
            assert again.spans == payload.spans
            sent += payload.spans
    assert sent == received.spans


def _small_correlator() -> tuple[Correlator, MemorySessionStore, TraceIdentities]:
    store = MemorySessionStore(500)
    traces = TraceIdentities(60 * S, 500)
    correlator = Correlator(
        Rules(DEFAULT_ADDRESS_KEYS, ("gen_ai.request.model",), ("jwt.sub",), 2 * S),
        Resolver(window_ns=5 * S, skew_ns=500 * MS, policy="skip"),
        IdentityReader(),
        store,
        traces,
        HoldBuffer(300),
        DIRECTORY,
    )
    return correlator, store, traces


def _traffic_request(rng: random.Random, now: int) -> ExportTraceServiceRequest:
    """A gateway batch with fresh trace ids; some spans carry identity, most do not."""
    spans_ = []
    for _ in range(rng.randint(1, 4)):
        trace = rng.getrandbits(48) + 1
        src = rng.choice([f"{GW}:{rng.randint(1, 9)}", "10.20.0.9", "[fd00::7]:1", None])
        extra = [kv("user.email", "ana.lima@example.com")] if rng.random() < 0.2 else []
        if rng.random() < 0.2:
            extra.append(kv("jwt.sub", "auth0|bot"))
        spans_.append(gateway_span(trace, now - rng.randint(0, 3 * S), src=src, extra=extra))
    return request_of(*spans_)


def test_correlator_memory_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal rounds of traffic after warm-up leave traced memory flat.

    Every structure on the span path is bounded (store, trace map, hold buffer, the
    address, directory, decision and encoding caches). With small bounds they fill during the
    warm-up, so later rounds must not grow memory. The run is deterministic (about
    +25, +65, +71 KiB after each round); the check catches leaks above roughly 130
    bytes per request (50 per span), e.g. a trace id kept per request.
    """
    for module in (identity_module, address_module, directory_module):
        monkeypatch.setattr(module, "_CACHE_LIMIT", 256)
    for module in (batch_module, usage_module, columns_module):
        monkeypatch.setattr(module, "_MEMO_LIMIT", 256)
    monkeypatch.setattr(decided_module, "_LIMIT", 256)
    rng = random.Random(20261126)
    correlator, store, traces = _small_correlator()
    now = T0

    def run(requests_: int) -> None:
        nonlocal now
        for i in range(requests_):
            now += 40 * MS  # the trace map's 60 s TTL is reached during the warm-up
            if i % 4 == 0:
                who = rng.choice([MIKE, ANA, PLAT])
                session = event(who, now - rng.randint(0, S), ip=rng.choice([GW, "fd00::7"]))
                store.add(session)
                correlator.on_session(session, now)
            request = _traffic_request(rng, now)
            correlator.receive(Received.of(request), now)
            correlator.tick(now)
            if i % 50 == 0:  # the sweeper
                store.expire(now - 60 * S)
                traces.expire(now)

    tracemalloc.start()
    try:
        run(1500)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        grown = []
        for _ in range(3):
            run(1000)
            gc.collect()
            grown.append(tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert grown[-1] - grown[0] < 256 * 1024, grown
    assert max(grown) < 1024 * 1024, grown


# ====================================================================== 2. session API


@FUZZ
@given(body=json_bodies(session_documents), now_ns=st.integers(0, U64))
def test_session_api_rejects_only_with_invalid_input(body: bytes, now_ns: int) -> None:
    """Any body parses into valid sessions or raises InvalidInput, nothing else."""
    try:
        message = parse_json_body(body)
        got = to_sessions(message, now_ns=now_ns, default_ttl_s=1800.0)
    except InvalidInput as exc:
        assert exc.problems
        note("rejected")
        return
    note("accepted")
    assert got
    for s in got:
        assert ipaddress.ip_address(s.source_ip)
        assert s.user.id or s.user.email
        assert s.start_ns <= s.end_ns
        assert s.end_ns - s.start_ns <= MAX_TTL_S * NS
        assert s.kind in ("session", "request")
        if s.kind == "request":
            assert s.start_ns == s.end_ns


# ====================================================================== 3. Open WebUI webhooks


@FUZZ
@given(
    body=json_bodies(webhook_documents),
    source_ip=st.sampled_from(SESSION_IPS),
    now_ns=st.one_of(st.integers(T0 - 60 * S, T0 + 60 * S), st.integers(0, U64)),
)
def test_webhooks_never_raise(body: bytes, source_ip: str, now_ns: int) -> None:
    """parse_body raises only InvalidInput; interpret always returns an action."""
    try:
        data = parse_body(body)
    except InvalidInput:
        note("not a JSON object")
        return
    assert isinstance(data, dict)
    action = interpret(data, source_ip=source_ip, now_ns=now_ns, session_ttl_s=1800.0)
    assert isinstance(action, Store | Close | Ignore)
    note(f"Ignore {action.reason}" if isinstance(action, Ignore) else type(action).__name__)
    if isinstance(action, Store):
        assert action.session.user.key
        assert action.session.source_ip == source_ip
        assert action.session.start_ns == now_ns <= action.session.end_ns
    elif isinstance(action, Close):
        assert action.user_key
        assert action.at_ns == now_ns


# ====================================================================== 4. address normalisation

addressish = st.one_of(
    st.text(max_size=24),
    # Whitespace inside brackets is covered by the regression property below.
    st.text(alphabet="0123456789abcdefABCDEF:.[]%", max_size=24),
    st.text(max_size=24).map(lambda t: f" {t}\t"),
    st.builds(
        lambda ip, port, scope, bracket: (
            f"[{ip}{scope}]:{port}" if bracket else f"{ip}{scope}" + (f":{port}" if port else "")
        ),
        st.ip_addresses(),
        st.one_of(st.just(""), st.integers(0, 99999).map(str)),
        # Scope ids with whitespace: the regression property below.
        st.one_of(st.just(""), st.from_regex(r"%[a-z0-9.:]{1,6}", fullmatch=True)),
        st.booleans(),
    ),
)


@FUZZ
@given(text=addressish)
@example(text="[::ffff:10.0.0.1]:80")
@example(text="fe80::1%eth0")
def test_normalize_ip_is_canonical(text: str) -> None:
    """normalize_ip never raises; what it returns is an IP and its own normal form."""
    ip = normalize_ip(text)
    note("rejected" if ip is None else "normalised")
    if ip is not None:
        assert ipaddress.ip_address(ip)
        assert normalize_ip(ip) == ip


# ====================================================================== 5. directory


@FUZZ
@given(doc=directory_documents)
def test_directory_rejects_only_with_config_error(doc: object) -> None:
    """Any YAML-like document gives a directory or a ConfigError, which names problems."""
    try:
        directory = parse_directory(doc)
    except ConfigError as exc:
        assert exc.problems
        note("rejected")
        return
    note("accepted, empty" if not len(directory) else "accepted")
    assert isinstance(directory, Directory)
    for ip in SESSION_IPS:
        directory.by_address(ip)


# ====================================================================== 6. wire builder


@st.composite
def groups(draw: st.DrawFn) -> list[tuple[Origin, list[bytes]]]:
    """Origins (resources and scopes may repeat) with serialized spans, some with tails."""
    resource_pool = draw(st.lists(resources(), min_size=1, max_size=2))
    out = []
    for _ in range(draw(st.integers(0, 4))):
        resource = draw(st.sampled_from(resource_pool))
        scope = draw(scopes())
        origin = Origin(
            None if resource is None else resource.SerializeToString(),
            draw(schema_urls),
            None if scope is None else scope.SerializeToString(),
            draw(schema_urls),
        )
        encoded = []
        for span in draw(st.lists(spans(), max_size=3)):
            tail = Span()
            tail.attributes.extend(draw(attribute_lists))
            encoded.append(span.SerializeToString() + tail.SerializeToString())
        out.append((origin, encoded))
    return out


def expected_request(items: list[tuple[Origin, list[bytes]]]) -> ExportTraceServiceRequest:
    """The request build_request documents: one ResourceSpans per resource, in order."""
    req = ExportTraceServiceRequest()
    by_resource: dict[tuple[bytes | None, str], int] = {}
    for origin, encoded in items:
        key = (origin.resource, origin.resource_schema_url)
        if key not in by_resource:
            by_resource[key] = len(req.resource_spans)
            rs = req.resource_spans.add(schema_url=origin.resource_schema_url)
            if origin.resource is not None:
                rs.resource.SetInParent()
                rs.resource.MergeFromString(origin.resource)
        ss = req.resource_spans[by_resource[key]].scope_spans.add(
            schema_url=origin.scope_schema_url
        )
        if origin.scope is not None:
            ss.scope.SetInParent()
            ss.scope.MergeFromString(origin.scope)
        for data in encoded:
            ss.spans.add().MergeFromString(data)
    return req


@FUZZ_SLOW
@given(items=groups())
def test_build_request_holds_exactly_the_spans(items: list[tuple[Origin, list[bytes]]]) -> None:
    """The bytes decode to the given spans, under equal resources and scopes."""
    got = ExportTraceServiceRequest.FromString(build_request(items))
    want = expected_request(items)
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)
    assert len(spans_in(got)) == sum(len(spans_) for _, spans_ in items)


# ============================================= found by fuzzing, fixed (kept as regressions)

# Digit strings past Python's 4300-digit int conversion limit (int() would raise here too).
huge_literals = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from([b"1", b"9", b"-1"]),
    st.integers(4300, 6000).map(lambda n: b"0" * n),
)


@FUZZ
@given(digits=huge_literals, field=st.sampled_from(["ttl_seconds", "start", "user"]))
@example(digits=b"1" * 4301, field="ttl_seconds")
def test_session_api_huge_integer_is_invalid_input(digits: bytes, field: str) -> None:
    """An integer literal past Python's 4300-digit limit must be InvalidInput, not a 500."""
    body = b'{"source_ip": "10.0.0.1", "%s": %s}' % (field.encode(), digits)
    with pytest.raises(InvalidInput):
        parse_json_body(body)


@FUZZ
@given(digits=huge_literals)
@example(digits=b"1" * 4301)
def test_webhook_huge_integer_is_invalid_input(digits: bytes) -> None:
    """Same for the webhook body."""
    with pytest.raises(InvalidInput):
        parse_body(b'{"event": "auth.login", "created_at": %s}' % digits)


@FUZZ
@given(created=st.integers(2**1024, 2**1100) | st.integers(-(2**1100), -(2**1024)))
@example(created=10**400)
def test_webhook_huge_created_at_is_ignored(created: int) -> None:
    """A created_at that JSON allows but no float can hold must not crash interpret."""
    data = parse_body(dumps({"event": "auth.login", "actor": {"id": "u"}, "created_at": created}))
    action = interpret(data, source_ip=GW, now_ns=T0, session_ttl_s=1800.0)
    assert isinstance(action, Store | Close | Ignore)


@FUZZ
@given(
    ip=st.ip_addresses(v=6).map(str),
    scope=st.from_regex(r"[a-z0-9]{1,5}", fullmatch=True),
    space=st.sampled_from([" ", "\t", "\n", "\x0b", "\u3000"]),
)
@example(ip="fe80::1", scope="eth0", space=" ")
def test_normalize_ip_scope_whitespace_is_stable(ip: str, scope: str, space: str) -> None:
    """Input [fe80::1%eth0 ]:1 gives "fe80::1%eth0 ", which normalises to "fe80::1%eth0"."""
    got = normalize_ip(f"[{ip}%{scope}{space}]:40312")
    assert got is None or normalize_ip(got) == got


@FUZZ
@given(ip=st.ip_addresses(v=4), prefix=st.sampled_from(["", "/128", "/120"]))
@example(ip=ipaddress.IPv4Address("10.0.0.5"), prefix="")
def test_directory_ipv4_mapped_entry_matches(ip: ipaddress.IPv4Address, prefix: str) -> None:
    """An entry "::ffff:10.0.0.5" should match the span address "[::ffff:10.0.0.5]:1"."""
    mapped = f"::ffff:{ip}"
    directory = parse_directory({"users": [{"id": "a", "addresses": [mapped + prefix]}]})
    span_ip = normalize_ip(f"[{mapped}]:40312")
    assert span_ip is not None
    assert directory.by_address(span_ip) is not None


@FUZZ
@given(
    key=st.sampled_from(sorted(WRITTEN - GUARDED)),
    value=st.text(max_size=5),
    hold_ms=st.sampled_from([0, 6000]),
)
@example(key="user.team", value="producer-team", hold_ms=0)
def test_correlator_only_inserts_absent_keys(key: str, value: str, hold_ms: int) -> None:
    """README: "only inserts keys that are absent, so a value the producer set is never
    overwritten" -- a span already carrying ``key`` must not get a second one."""
    kit = Kit(hold_ms=hold_ms, directory=DIRECTORY)
    kit.add(event(PLAT, T0 - 300 * MS))
    raw = request_of(gateway_span(extra=[kv(key, value)])).SerializeToString()
    outs = [kit.receive(ExportTraceServiceRequest.FromString(raw)), kit.correlator.drain()]
    (span,) = sent_spans(outs)
    assert [a.key for a in span.attributes].count(key) == 1


def _varint(n: int, pad: int = 0) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    if pad:  # the same number, in ``pad`` more bytes (valid protobuf, just not minimal)
        out.extend([n | 0x80] + [0x80] * (pad - 1) + [0x00])
    else:
        out.append(n)
    return bytes(out)


@FUZZ
@given(
    key=st.sampled_from(["user.email", "user.id", "enduser.id", "client.user.email"]),
    pad=st.integers(1, 3),
    hold_ms=st.sampled_from([0, 6000]),
)
@example(key="user.email", pad=1, hold_ms=0)
def test_producer_identity_survives_any_valid_encoding(key: str, pad: int, hold_ms: int) -> None:
    """The same span encoded with a padded key length means the same: its identity wins."""
    kit = Kit(hold_ms=hold_ms)
    kit.add(event(MIKE, T0 - 300 * MS))
    value = AnyValue(string_value="ana.lima@example.com").SerializeToString()
    pair = b"\x0a" + _varint(len(key), pad) + key.encode() + b"\x12" + _varint(len(value)) + value
    span = gateway_span().SerializeToString() + b"\x4a" + _varint(len(pair)) + pair
    raw = build_request([(Origin(None, "", None, ""), [span])])
    request = ExportTraceServiceRequest.FromString(raw)
    assert KeyValue(key=key, value=AnyValue(string_value="ana.lima@example.com")) in (
        request.resource_spans[0].scope_spans[0].spans[0].attributes
    )
    outs = [kit.correlator.receive(Received.parse(raw), T0), kit.correlator.drain()]
    (got,) = sent_spans(outs)
    method = [a.value.string_value for a in got.attributes if a.key == "user.attribution.method"]
    assert method == ["span"]
    assert [a.key for a in got.attributes].count(key) == 1
