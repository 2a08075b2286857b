"""Open WebUI event webhooks: the pure interpretation table and the live endpoint."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from conftest import Clock, service_config

from processor.app.service import Service
from processor.identity.intake.openwebui import Close, Ignore, Store, interpret
from processor.model import Session, User
from processor.tools.sink import TraceSink

SECRET = "wh-secret-0123456789abcdef"
NOW_S = 1_795_722_066
NOW = NOW_S * 1_000_000_000
ACTOR = {
    "id": "u-1",
    "name": "Mike Chen",
    "email": "mike.chen@example.com",
    "role": "user",
    "created_at": 1_790_000_000,
    "updated_at": 1_795_000_000,
    "type": "user",
}
MIKE = User(id="u-1", email="mike.chen@example.com", name="Mike Chen", roles=("user",))


def event(name: str, data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """An Open WebUI 0.12 Event payload."""
    payload: dict[str, Any] = {
        "schema": "0.12.4",
        "id": "ev-1",
        "event": name,
        "resource": name.split(".")[0],
        "operation": name.split(".")[1],
        "created_at": NOW_S,
        "instance_id": "inst-1",
        "version": "0.12.4",
        "source": "api",
        "actor": ACTOR,
        "subject": {"type": "message", "id": "m-1"},
        "data": data or {},
        "message": None,
    }
    payload.update(extra)
    return payload


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            event("message.created", {"chat_id": "c", "role": "assistant", "model": "gpt-4o"}),
            Store(Session("172.18.0.5", MIKE, NOW, NOW, model="gpt-4o", kind="request")),
        ),
        (
            event("chat.finished", {"user_id": "u-1", "chat_id": "c", "model_id": "gpt-4o"}),
            Store(Session("172.18.0.5", MIKE, NOW, NOW, model="gpt-4o", kind="request")),
        ),
        (
            event("chat.created", {"chat_id": "c"}),
            Store(Session("172.18.0.5", MIKE, NOW, NOW, kind="request")),
        ),
        (
            event("auth.login", {"auth_method": "password"}),
            Store(Session("172.18.0.5", MIKE, NOW, NOW + 1800 * 1_000_000_000)),
        ),
        (event("auth.logout"), Close("172.18.0.5", "u-1", NOW)),
        (event("model.updated"), Ignore("unknown")),
        ({"action": "signup", "message": "New user signed up", "user": "{}"}, Ignore("legacy")),
        (event("message.created", actor=None), Ignore("no_actor")),
        (event("message.created", actor={"name": "anonymous"}), Ignore("no_actor")),
        (event("message.created", created_at=NOW_S - 3600), Ignore("stale")),
        (event("message.created", created_at=float("nan")), Ignore("stale")),
        (event("message.created", created_at=float("inf")), Ignore("stale")),
        (
            event("message.created", actor={"id": "u-1", "email": "not an email"}),
            Store(Session("172.18.0.5", User(id="u-1"), NOW, NOW, kind="request")),
        ),
        (event("message.created", actor={"email": "mike"}), Ignore("no_actor")),
    ],
    ids=[
        "message.created",
        "chat.finished",
        "chat.created",
        "auth.login",
        "auth.logout",
        "unknown",
        "legacy-signup",
        "no-actor",
        "actor-without-id",
        "stale",
        "nan-created-at",
        "infinite-created-at",
        "non-email-dropped",
        "only-a-non-email",
    ],
)
def test_interpret(payload: dict[str, Any], expected: object) -> None:
    """Each event kind maps to a request event, a session, a sign-out, or nothing."""
    assert interpret(payload, source_ip="172.18.0.5", now_ns=NOW, session_ttl_s=1800) == expected


@pytest.fixture
async def hooked(sink: TraceSink, clock: Clock) -> AsyncIterator[Service]:
    """A service with the Open WebUI webhook enabled; clock at the events' time."""
    clock.now_ns = NOW
    config = service_config(
        sink.endpoint, webhooks={"openwebui": {"enabled": True, "secret": SECRET}}
    )
    svc = Service(config, clock_ns=clock)
    await svc.start()
    yield svc
    await svc.shutdown(grace_s=1.0)


async def post(
    svc: Service, body: bytes | dict[str, Any], secret: str = SECRET
) -> tuple[int, dict[str, Any]]:
    """POST a webhook body; returns the status and the JSON reply."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{svc.addresses.http}/v1/webhooks/openwebui/{secret}",
            data=data,
            headers={"Content-Type": "application/json"},
        ) as reply,
    ):
        return reply.status, await reply.json()


async def test_message_event_becomes_request_event_at_peer_address(hooked: Service) -> None:
    """A message.created event stores a request event on the webhook's peer address."""
    status, reply = await post(hooked, event("message.created", {"model": "gpt-4o"}))
    assert (status, reply["status"]) == (200, "accepted")
    (stored,) = hooked.store.events_near("127.0.0.1", 0, 2**63)
    assert (stored.user.email, stored.model, stored.start_ns) == (MIKE.email, "gpt-4o", NOW)


async def test_login_then_logout(hooked: Service) -> None:
    """auth.login opens a long session that auth.logout closes."""
    await post(hooked, event("auth.login"))
    assert hooked.store.users_at("127.0.0.1", NOW + 10).users == (MIKE,)
    status, reply = await post(hooked, event("auth.logout"))
    assert (status, reply["closed"]) == (200, 1)
    assert hooked.store.users_at("127.0.0.1", NOW + 10).users == ()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (event("model.updated"), 200),
        ({"action": "signup", "message": "x", "user": "{}"}, 200),
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b"{" + b" " * 5000 + b"}", 413),
    ],
    ids=["unknown", "legacy", "malformed", "not-an-object", "oversize"],
)
async def test_odd_bodies_store_nothing(
    hooked: Service, body: bytes | dict[str, Any], status: int
) -> None:
    """Unknown and legacy events are accepted and ignored; bad bodies are refused."""
    got, _ = await post(hooked, body)
    assert got == status
    assert len(hooked.store) == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_json_by_its_type_is_refused(
    hooked: Service, content_type: str
) -> None:
    """Only ``Content-Type: application/json`` is read (Open WebUI sends nothing else)."""
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"http://{hooked.addresses.http}/v1/webhooks/openwebui/{SECRET}",
            data=json.dumps(event("message.created")).encode(),
            headers={"Content-Type": content_type},
        ) as reply,
    ):
        assert reply.status == 415
    assert len(hooked.store) == 0


async def test_wrong_secret_looks_like_no_endpoint(hooked: Service) -> None:
    """A wrong secret gets the very 404 an unknown path gets, and stores nothing."""
    wrong = await post(hooked, event("message.created"), secret="wrong-secret-0123456789")
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"http://{hooked.addresses.http}/v1/webhooks/nothing-here") as reply,
    ):
        missing = (reply.status, await reply.json())
    assert wrong == missing == (404, {"error": "Not Found"})
    assert len(hooked.store) == 0


async def test_configured_source_ip_wins(sink: TraceSink, clock: Clock) -> None:
    """With webhooks.openwebui.source_ip set, events land on that address."""
    clock.now_ns = NOW
    hook = {"enabled": True, "secret": SECRET, "source_ip": "172.18.0.5"}
    svc = Service(service_config(sink.endpoint, webhooks={"openwebui": hook}), clock_ns=clock)
    await svc.start()
    try:
        await post(svc, event("message.created", {"model": "gpt-4o"}))
        assert len(svc.store.events_near("172.18.0.5", 0, 2**63)) == 1
        assert svc.store.events_near("127.0.0.1", 0, 2**63) == []
    finally:
        await svc.shutdown(grace_s=1.0)


async def test_webhook_metrics_count_outcomes(hooked: Service) -> None:
    """Every call is counted by event and outcome, and the secret never appears."""
    await post(hooked, event("message.created"))
    await post(hooked, event("model.updated"))
    await post(hooked, event("message.created"), secret="nope-nope-nope-nope")
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://{hooked.addresses.http}/metrics") as reply,
    ):
        text = await reply.text()
    sample = hooked.metrics.registry.get_sample_value
    name = "user_enricher_webhook_events_total"
    assert sample(name, {"event": "message.created", "outcome": "accepted"}) == 1
    assert sample(name, {"event": "other", "outcome": "unknown"}) == 1
    assert sample(name, {"event": "none", "outcome": "wrong_secret"}) == 1
    assert SECRET not in text
