"""The Open WebUI filter in deploy/openwebui, loaded as Open WebUI loads it, against a service."""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import time
import types
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN, Clock
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from processor.app.service import Service
from processor.model import Session

FILTER_PATH = Path(__file__).resolve().parent.parent / "deploy/openwebui/user_enricher_filter.py"
OPENWEBUI_IP = "172.18.0.5"
ALL_TIME = (0, 2**63)
LOGGER = "user_enricher_filter"
USER = {"id": "u-1", "email": "mike.chen@example.com", "name": "Mike Chen", "role": "user"}


@pytest.fixture
def clock() -> Clock:
    """The filter stamps events with the wall clock, so the service's clock starts there.

    (Sessions more than 7 days from the service's now are refused.)
    """
    return Clock(time.time_ns())


def load_module() -> types.ModuleType:
    """Execute the filter's source in a fresh module, the way Open WebUI does."""
    source = FILTER_PATH.read_text()
    module = types.ModuleType("function_user_enricher")
    exec(compile(source, str(FILTER_PATH), "exec"), module.__dict__)
    return module


def make_filter(endpoint: str, **valves: Any) -> Any:
    """A filter instance with its valves set as an admin would."""
    module = load_module()
    f = module.Filter()
    settings: dict[str, Any] = {"token": TOKEN, "source_address": OPENWEBUI_IP, **valves}
    f.valves = module.Filter.Valves(endpoint=endpoint, **settings)
    return f


def live_filter(service: Service, **valves: Any) -> Any:
    """A filter pointed at the running ``service``."""
    return make_filter(f"http://{service.addresses.http}", **valves)


def chat_body() -> dict[str, Any]:
    """A chat completion body as Open WebUI hands it to filters."""
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def hook_args(user: dict[str, Any] | None = USER) -> dict[str, Any]:
    """The extra arguments Open WebUI passes to filter hooks."""
    return {
        "__user__": None if user is None else dict(user),
        "__metadata__": {"chat_id": "c-1", "message_id": "m-1", "session_id": "s-1"},
        "__model__": {"id": "gpt-4o", "name": "GPT-4o"},
        "__chat_id__": "c-1",
        "__message_id__": "m-1",
    }


async def settle(f: Any) -> None:
    """Wait for every background push the filter started."""
    await asyncio.gather(*list(f._pending))
    assert not f._pending


def events(service: Service, ip: str = OPENWEBUI_IP) -> list[Session]:
    """Every request event stored for ``ip``."""
    return service.store.events_near(ip, *ALL_TIME)


def closed_port_endpoint() -> str:
    """An endpoint on 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- live service


async def test_inlet_returns_the_same_body_and_pushes_one_request_event(service: Service) -> None:
    """inlet hands back the very body it got, untouched, and one request event gets stored."""
    f = live_filter(service)
    body = chat_body()
    before = copy.deepcopy(body)

    returned = await f.inlet(body, **hook_args())
    await settle(f)

    assert returned is body
    assert body == before
    [event] = events(service)
    assert event.kind == "request"
    assert event.user.email == "mike.chen@example.com"
    assert event.user.id == "u-1"
    assert event.user.name == "Mike Chen"
    assert event.user.roles == ("user",)
    assert event.model == "gpt-4o"
    assert event.start_ns == event.end_ns
    assert len(service.store) == 1


async def test_request_pushes_one_event_per_model_call(service: Service) -> None:
    """Every call of the request hook (one per model call) stores its own event."""
    f = live_filter(service)
    body = chat_body()

    assert await f.request(body, **hook_args()) is body
    assert await f.request(body, **hook_args()) is body
    await settle(f)

    assert [e.user.email for e in events(service)] == ["mike.chen@example.com"] * 2
    # One event per model call: a span that claims it leaves it to no other.
    assert [e.kind for e in events(service)] == ["call", "call"]


async def test_inlet_stays_quiet_once_request_has_run(service: Service) -> None:
    """After Open WebUI has shown it calls request, inlet no longer pushes (no double events)."""
    f = live_filter(service)
    await f.request(chat_body(), **hook_args())
    await settle(f)

    body = chat_body()
    assert await f.inlet(body, **hook_args()) is body
    assert not f._pending
    assert len(events(service)) == 1


async def test_model_falls_back_to_the_model_argument(service: Service) -> None:
    """Without a model in the body, the event names the model Open WebUI resolved."""
    f = live_filter(service)
    await f.request({"messages": []}, **hook_args())
    await settle(f)

    [event] = events(service)
    assert event.model == "gpt-4o"


async def test_empty_source_address_discovers_the_local_address(service: Service) -> None:
    """With no source_address, the local address towards the endpoint (loopback here) is sent."""
    f = live_filter(service, source_address="")
    await f.inlet(chat_body(), **hook_args())
    await settle(f)

    [event] = events(service, "127.0.0.1")
    assert event.user.email == "mike.chen@example.com"


async def test_long_and_non_ascii_values_are_bounded_and_accepted(service: Service) -> None:
    """Over-long names are cut to the service's 256-byte limit, so the event is still stored."""
    f = live_filter(service)
    user = {**USER, "name": "Zoë 陈" * 200}
    await f.inlet(chat_body(), **hook_args(user))
    await settle(f)

    [event] = events(service)
    assert 0 < len(event.user.name.encode()) <= 256
    assert event.user.name.startswith("Zoë 陈")


async def test_the_current_trace_id_is_sent(service: Service) -> None:
    """Inside an OpenTelemetry span, the event carries that span's trace id."""
    tracer = TracerProvider().get_tracer("open-webui-test")
    f = live_filter(service)
    with tracer.start_as_current_span("POST /api/chat/completions") as span:
        await f.request(chat_body(), **hook_args())
    await settle(f)

    [event] = events(service)
    assert event.trace_id == trace.format_trace_id(span.get_span_context().trace_id)


async def test_no_trace_id_outside_a_span(service: Service) -> None:
    """Without a current span, the event has no trace id."""
    f = live_filter(service)
    await f.request(chat_body(), **hook_args())
    await settle(f)

    [event] = events(service)
    assert event.trace_id == ""


async def test_wrong_token_is_logged_and_swallowed(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A 401 from the service is logged (without the token) and nothing escapes or is stored."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    wrong = "wrong-token-ZZZZ9999"
    f = live_filter(service, token=wrong)
    body = chat_body()

    assert await f.inlet(body, **hook_args()) is body
    await settle(f)

    assert len(service.store) == 0
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "401" in warnings[0].getMessage()
    assert wrong not in caplog.text


@pytest.mark.parametrize(
    ("valves", "user"),
    [
        ({"enabled": False}, USER),
        ({}, None),
        ({}, {"name": "Nobody", "role": "user"}),
        ({}, {"id": "", "email": "", "name": "Nobody"}),
    ],
    ids=["disabled", "no-user", "user-without-id-or-email", "empty-id-and-email"],
)
async def test_no_push_without_a_user_or_when_disabled(
    service: Service, valves: dict[str, Any], user: dict[str, Any] | None
) -> None:
    """A disabled filter, or a call without an identifiable user, sends nothing."""
    f = live_filter(service, **valves)
    body = chat_body()

    assert await f.inlet(body, **hook_args(user)) is body
    assert await f.request(body, **hook_args(user)) is body

    assert not f._pending
    assert len(service.store) == 0


async def test_empty_endpoint_sends_nothing() -> None:
    """With no endpoint configured the hooks only hand the body back."""
    f = make_filter("")
    body = chat_body()

    assert await f.request(body, **hook_args()) is body
    assert not f._pending


# --------------------------------------------------------------------------- dead service


async def test_dead_service_never_breaks_the_chat(caplog: pytest.LogCaptureFixture) -> None:
    """With nothing listening, the hook still returns the body and the failure is only logged."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    f = make_filter(closed_port_endpoint(), timeout_seconds=2.0)
    body = chat_body()

    assert await f.inlet(body, **hook_args()) is body
    assert await f.request(body, **hook_args()) is body
    assert f._pending
    await settle(f)

    failures = [r for r in caplog.records if r.name == LOGGER and "failed" in r.getMessage()]
    # One warning; the second failure, inside the same minute, goes to DEBUG.
    assert sorted(r.levelno for r in failures) == [logging.DEBUG, logging.WARNING]
    assert TOKEN not in caplog.text
