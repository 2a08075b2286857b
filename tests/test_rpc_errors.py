"""Every gRPC method maps a client's mistake to a client status, never UNKNOWN."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from conftest import TOKEN, free_port

from processor.app.service import Service
from processor.errors import InvalidInput, Problem
from processor.receive import rpc

GARBAGE = (b"\xff\xff\xff", b"\x0a\x05abc", b"\x08")
# Every method the service's gRPC port serves, and whether it streams.
METHODS = (
    ("/opentelemetry.proto.collector.trace.v1.TraceService/Export", False),
    ("/user_enricher.v1.SessionService/PushSessions", False),
    ("/grpc.health.v1.Health/Check", False),
    ("/grpc.health.v1.Health/Watch", True),
)
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def call(
    channel: grpc.aio.Channel,
    method: str,
    stream: bool,
    raw: bytes,
    metadata: tuple[tuple[str, str], ...] = AUTH,
) -> grpc.StatusCode:
    """The status a raw-bytes call of ``method`` ends with (OK after the first message)."""
    try:
        if stream:
            async for _ in channel.unary_stream(method)(raw, metadata=metadata, timeout=5):
                break
        else:
            await channel.unary_unary(method)(raw, metadata=metadata, timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize(("method", "stream"), METHODS)
async def test_undecodable_bytes_are_invalid_argument(
    service: Service, method: str, stream: bool
) -> None:
    """Bytes that are not the method's request message: INVALID_ARGUMENT on every RPC."""
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        for raw in GARBAGE:
            assert await call(channel, method, stream, raw) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_missing_token_is_refused_before_the_payload_is_read(service: Service) -> None:
    """Without the token, garbage to PushSessions is UNAUTHENTICATED, not INVALID_ARGUMENT."""
    method = "/user_enricher.v1.SessionService/PushSessions"
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        status = await call(channel, method, False, GARBAGE[0], metadata=())
    assert status == grpc.StatusCode.UNAUTHENTICATED


# --------------------------------------------------------------------------- the wrapper itself


async def invalid(request: bytes, context: rpc.Context) -> bytes:
    """A handler that finds the request invalid."""
    raise InvalidInput([Problem("sessions.0.user.email", "not an email")])


async def broken(request: bytes, context: rpc.Context) -> bytes:
    """A handler with a bug."""
    raise KeyError("boom")


async def aborts(request: bytes, context: rpc.Context) -> bytes:
    """A handler that sets its own status on purpose."""
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")
    raise AssertionError("abort raises")


@pytest.fixture
async def toy() -> AsyncIterator[grpc.aio.Channel]:
    """A grpc.aio server with one method per handler above, through ``rpc.unary``."""
    server = grpc.aio.server()
    methods = {
        name: rpc.unary(bytes, handle, what="a Toy", serialize=bytes)
        for name, handle in (("Invalid", invalid), ("Broken", broken), ("Aborts", aborts))
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("toy.Toy", methods)])
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ("Broken", grpc.StatusCode.INTERNAL),
        ("Aborts", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_the_wrapper_maps_each_failure(
    toy: grpc.aio.Channel, name: str, code: grpc.StatusCode
) -> None:
    """InvalidInput is the client's, any other exception INTERNAL, a handler's own abort kept."""
    assert await call(toy, f"/toy.Toy/{name}", False, b"x", metadata=()) == code


async def test_an_invalid_input_names_its_problem(toy: grpc.aio.Channel) -> None:
    """The details carry the problem's path, so the sender knows what to fix."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await toy.unary_unary("/toy.Toy/Invalid")(b"x", timeout=5)
    assert "sessions.0.user.email: not an email" in (caught.value.details() or "")
