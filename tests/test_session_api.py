"""The session API (HTTP JSON and gRPC) of a real running service."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import grpc.aio
import pytest
from conftest import TOKEN, Clock, service_config
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from processor.app.service import Service
from processor.identity.intake.gen.user_enricher.v1 import sessions_pb2 as pb
from processor.model import User
from processor.tools.sink import TraceSink

S = 1_000_000_000
PUSH_METHOD = "/user_enricher.v1.SessionService/PushSessions"
AUTH = f"Bearer {TOKEN}"
JSON = "application/json"

# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Reply:
    """What an HTTP request got back."""

    status: int
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.text)


def session(ip: str = "10.0.0.7", **changes: Any) -> dict[str, Any]:
    """A valid session in the JSON mapping, top-level fields replaced by ``changes``."""
    return {"source_ip": ip, "user": {"id": "u-1", "email": "ann@example.com"}, **changes}


def as_body(data: Any) -> bytes:
    """``data`` as a JSON body (bytes pass through untouched)."""
    return data if isinstance(data, bytes) else json.dumps(data).encode()


async def http(
    service: Service,
    method: str,
    path: str,
    data: Any = b"",
    *,
    authorization: str | None = AUTH,
    content_type: str = JSON,
) -> Reply:
    """Send one HTTP request to the service's API and read the whole reply."""
    headers = {"Content-Type": content_type}
    if authorization is not None:
        headers["Authorization"] = authorization
    url = f"http://{service.addresses.http}{path}"
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, url, data=as_body(data), headers=headers) as response,
    ):
        return Reply(response.status, await response.text(), dict(response.headers))


async def push(service: Service, data: Any, **kwargs: Any) -> Reply:
    """POST ``data`` to /v1/sessions."""
    return await http(service, "POST", "/v1/sessions", data, **kwargs)


async def assert_rejected_cleanly(service: Service) -> None:
    """Nothing was stored and the service still reports itself healthy."""
    assert len(service.store) == 0
    assert (await http(service, "GET", "/healthz")).status == 200


def problems(reply: Reply) -> list[dict[str, str]]:
    """The ``problems`` list of a 400 reply, after checking the error body's shape."""
    assert reply.status == 400
    document = reply.json()
    assert isinstance(document["error"], str)
    result: list[dict[str, str]] = document["problems"]
    return result


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as {(sample name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def grpc_request(*sessions: dict[str, Any]) -> pb.PushSessionsRequest:
    """A PushSessionsRequest from sessions in the JSON mapping."""
    return json_format.ParseDict({"sessions": list(sessions)}, pb.PushSessionsRequest())


async def grpc_push(
    service: Service, request: pb.PushSessionsRequest, *, authorization: str | None = AUTH
) -> pb.PushSessionsResponse:
    """Call SessionService/PushSessions on the service's gRPC port."""
    metadata = () if authorization is None else (("authorization", authorization),)
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        call = channel.unary_unary(
            PUSH_METHOD,
            request_serializer=pb.PushSessionsRequest.SerializeToString,
            response_deserializer=pb.PushSessionsResponse.FromString,
        )
        response: pb.PushSessionsResponse = await call(request, metadata=metadata)
        return response


async def grpc_push_fails(
    service: Service, request: pb.PushSessionsRequest, **kwargs: Any
) -> grpc.aio.AioRpcError:
    """The error a PushSessions call that must fail ends with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await grpc_push(service, request, **kwargs)
    return caught.value


async def raw_http(service: Service, request: bytes) -> int:
    """Send raw bytes as one HTTP/1.1 request and return the status code."""
    assert service.addresses.http is not None
    host, port = service.addresses.http.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        status_line = await reader.readline()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


# --------------------------------------------------------------------------- HTTP: accepted


async def test_http_single_session_is_stored(service: Service, clock: Clock) -> None:
    """A lone session is accepted and then answers lookups on its address."""
    reply = await push(service, session(ttl_seconds=60, model="gpt-4o"))
    assert (reply.status, reply.json()) == (200, {"accepted": 1})
    match = service.store.users_at("10.0.0.7", clock.now_ns + 30 * S)
    assert match.users == (User(id="u-1", email="ann@example.com"),)
    assert service.store.users_at("10.0.0.7", clock.now_ns + 61 * S).users == ()


async def test_http_batch_is_stored(service: Service, clock: Clock) -> None:
    """A ``{"sessions": [...]}`` batch stores every session, normalising addresses."""
    batch = {
        "sessions": [session("10.0.0.1"), session("::ffff:10.0.0.2", start="2026-11-15T00:00:00Z")]
    }
    reply = await push(service, batch, content_type="application/json; charset=utf-8")
    assert (reply.status, reply.json()) == (200, {"accepted": 2})
    assert len(service.store) == 2
    assert service.store.users_at("10.0.0.1", clock.now_ns).users != ()
    assert service.store.users_at("10.0.0.2", 1_794_700_800 * S).users != ()


async def test_http_body_of_exactly_the_limit_is_accepted(service: Service) -> None:
    """A body of exactly max_body_bytes (4 KiB) is still within the limit."""
    raw = as_body(session())
    raw += b" " * (4096 - len(raw))
    reply = await push(service, raw)
    assert (reply.status, reply.json()) == (200, {"accepted": 1})


# --------------------------------------------------------------------------- HTTP: rejected

BASIC = "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()


@pytest.mark.parametrize(
    ("authorization", "data"),
    [
        (None, session()),
        ("", session()),
        ("Bearer wrong-token", session()),
        (f"Bearer {TOKEN}x", session()),
        (TOKEN, session()),
        (BASIC, session()),
        (None, b"{not json"),
        (None, b"x" * 10_000),
    ],
    ids=["missing", "empty", "wrong", "longer", "no-scheme", "basic", "bad-body", "huge-body"],
)
async def test_http_push_without_the_token_is_401(
    service: Service, authorization: str | None, data: Any
) -> None:
    """Without the bearer token the push is refused with 401 before the body is looked at."""
    reply = await push(service, data, authorization=authorization)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.json()["error"] and TOKEN not in reply.text
    await assert_rejected_cleanly(service)


async def test_http_wrong_content_type_is_415(service: Service) -> None:
    """A body that is not declared as JSON is refused with 415."""
    reply = await push(service, session(), content_type="text/plain")
    assert reply.status == 415
    await assert_rejected_cleanly(service)


async def test_http_malformed_json_is_400(service: Service) -> None:
    """Malformed JSON gets a 400 JSON body with ``error`` and ``problems``."""
    reply = await push(service, b'{"source_ip": ')
    assert problems(reply) and "not valid JSON" in problems(reply)[0]["message"]
    await assert_rejected_cleanly(service)


async def test_http_deeply_nested_json_is_400(service: Service) -> None:
    """A small but deeply nested body is a client error, not an internal one."""
    reply = await push(service, b"[" * 4000)
    assert reply.status == 400
    await assert_rejected_cleanly(service)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (session("10.0.0.7:8080"), {"path": "source_ip"}),
        (session("not-an-ip"), {"path": "source_ip"}),
        (
            session(user={"email": "nobody"}),
            {"path": "user.email", "message": "not an email address"},
        ),
        (
            {"sessions": [session(), session(user={"email": "nobody"}), session("10.0.0.8")]},
            {"path": "sessions[1].user.email", "message": "not an email address"},
        ),
    ],
    ids=["ip-with-port", "ip-garbage", "bad-email", "batch-one-bad"],
)
async def test_http_invalid_session_is_400_naming_the_field(
    service: Service, data: Any, expected: dict[str, str]
) -> None:
    """An invalid session gets a 400 naming the field, and no session is stored."""
    found = problems(await push(service, data))
    assert any(expected.items() <= p.items() for p in found), found
    await assert_rejected_cleanly(service)


async def test_http_oversized_body_is_413(service: Service) -> None:
    """A body over max_body_bytes (4 KiB) is refused with 413; the service stays up."""
    raw = as_body(session())
    reply = await push(service, raw + b" " * (4097 - len(raw)))
    assert reply.status == 413
    assert reply.json()["error"]
    await assert_rejected_cleanly(service)


async def test_http_non_utf8_authorization_is_401(service: Service) -> None:
    """A garbage Authorization header is an authentication failure, not a crash."""
    status = await raw_http(
        service,
        b"POST /v1/sessions HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    )
    assert status == 401
    await assert_rejected_cleanly(service)


# --------------------------------------------------------------------------- HTTP: probes, metrics


async def test_readyz_and_healthz_answer_200_while_running(service: Service) -> None:
    """Both probes answer 200 on a started service."""
    assert (await http(service, "GET", "/readyz")).status == 200
    assert (await http(service, "GET", "/healthz")).status == 200


async def test_metrics_count_pushes_and_rejections_without_leaking_the_token(
    service: Service,
) -> None:
    """/metrics counts accepted and refused pushes by reason; no reply ever shows the token."""
    replies = [
        await push(service, session()),
        await push(service, session(), authorization="Bearer nope"),
        await push(service, session(), content_type="text/plain"),
        await push(service, session("nope")),
        await push(service, b"{" + b" " * 5000),
    ]
    assert [r.status for r in replies] == [200, 401, 415, 400, 413]
    metrics = await http(service, "GET", "/metrics")
    assert metrics.status == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    samples = metric_samples(metrics.text)
    assert samples[("user_enricher_sessions_pushed_total", (("via", "http"),))] == 1
    for reason in ("unauthenticated", "content_type", "invalid", "too_large"):
        key = ("user_enricher_session_push_rejected_total", (("reason", reason), ("via", "http")))
        assert samples[key] == 1, reason
    for reply in [*replies, metrics]:
        assert TOKEN not in reply.text


# --------------------------------------------------------------------------- gRPC


async def test_grpc_push_is_stored(service: Service, clock: Clock) -> None:
    """PushSessions stores every session and reports how many."""
    response = await grpc_push(service, grpc_request(session(), session("10.0.0.8")))
    assert response.accepted == 2
    assert service.store.users_at("10.0.0.8", clock.now_ns).users != ()


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN, BASIC])
async def test_grpc_push_without_the_token_is_unauthenticated(
    service: Service, authorization: str | None
) -> None:
    """Without the bearer token in metadata PushSessions fails with UNAUTHENTICATED."""
    error = await grpc_push_fails(service, grpc_request(session()), authorization=authorization)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert TOKEN not in (error.details() or "")
    await assert_rejected_cleanly(service)


@pytest.mark.parametrize(
    ("request_", "path"),
    [
        (grpc_request(session(), session("10.0.0.7:80")), "sessions[1].source_ip"),
        (grpc_request(session(user={"email": "nobody"})), "sessions[0].user.email"),
        (pb.PushSessionsRequest(), "sessions"),
    ],
    ids=["bad-ip", "bad-email", "empty"],
)
async def test_grpc_invalid_session_is_invalid_argument(
    service: Service, request_: pb.PushSessionsRequest, path: str
) -> None:
    """An invalid batch fails with INVALID_ARGUMENT naming the field, storing nothing."""
    error = await grpc_push_fails(service, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{path}:" in error.details()
    await assert_rejected_cleanly(service)


async def test_grpc_many_invalid_sessions_is_still_invalid_argument(service: Service) -> None:
    """A full batch of bad sessions still fails with INVALID_ARGUMENT."""
    error = await grpc_push_fails(service, pb.PushSessionsRequest(sessions=[pb.Session()] * 1000))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_rejected_cleanly(service)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\x12\x80", b"\x08" + b"\x80" * 11],
    ids=["garbage", "truncated", "bad-utf8-or-wire", "overlong-varint"],
)
async def test_grpc_undecodable_bytes_are_invalid_argument(
    service: Service, payload: bytes
) -> None:
    """Bytes that are not a PushSessionsRequest get INVALID_ARGUMENT, never UNKNOWN."""
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        call = channel.unary_unary(PUSH_METHOD, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(payload, metadata=(("authorization", AUTH),))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "PushSessionsRequest" in (caught.value.details() or "")
    await assert_rejected_cleanly(service)


async def test_grpc_two_authorization_entries_are_unauthenticated(service: Service) -> None:
    """Two ``authorization`` entries are refused even if one is right (as on the receiver)."""
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        call = channel.unary_unary(
            PUSH_METHOD,
            request_serializer=pb.PushSessionsRequest.SerializeToString,
            response_deserializer=pb.PushSessionsResponse.FromString,
        )
        for metadata in (
            (("authorization", "Bearer wrong"), ("authorization", AUTH)),
            (("authorization", AUTH), ("authorization", "Bearer wrong")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(grpc_request(session()), metadata=metadata)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_health_reports_serving(service: Service) -> None:
    """The standard gRPC health service reports SERVING for the server and the API."""
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "user_enricher.v1.SessionService"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


# --------------------------------------------------------------------------- API disabled


@pytest.fixture
async def no_api_service(sink: TraceSink, clock: Clock) -> AsyncIterator[Service]:
    """A started service with the session API switched off."""
    config = service_config(sink.endpoint, api={"enabled": False, "endpoint": "127.0.0.1:0"})
    svc = Service(config, clock_ns=clock)
    await svc.start()
    yield svc
    await svc.shutdown(grace_s=1.0)


async def test_disabled_api_has_no_http_route(no_api_service: Service) -> None:
    """With the API disabled POST /v1/sessions is 404 while the probes still answer."""
    reply = await push(no_api_service, session())
    assert reply.status == 404
    await assert_rejected_cleanly(no_api_service)


async def test_disabled_api_has_no_grpc_method(no_api_service: Service) -> None:
    """With the API disabled PushSessions is UNIMPLEMENTED."""
    error = await grpc_push_fails(no_api_service, grpc_request(session()))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    await assert_rejected_cleanly(no_api_service)
