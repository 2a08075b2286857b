"""Security features inside the running service: receiver auth, and PII-free identity."""

from __future__ import annotations

import asyncio

import grpc
from conftest import Clock, service_config
from correlation_kit import MIKE, MS, T0, Kit, attrs, event, gateway_span, request_of, sent
from fault_kit import Ledger
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from processor.app.service import Service
from processor.correlate.identity import EmailHasher
from processor.tools.sink import TraceSink

RECEIVER_TOKEN = "receiver-token-0123456789"


def sdk_send(endpoint: str, token: str | None) -> None:
    """One span through the SDK exporter, with or without the bearer token (blocking)."""
    headers = {"authorization": f"Bearer {token}"} if token else None
    provider = TracerProvider(resource=Resource.create({"service.name": "agentgateway"}))
    exporter = OTLPSpanExporter(f"http://{endpoint}", insecure=True, headers=headers, timeout=5)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.get_tracer("agentgateway").start_span("POST /*").end()
    provider.shutdown()


async def test_receiver_token_required_when_configured(sink: TraceSink, clock: Clock) -> None:
    """With receiver.auth set, a sender without the token is refused; with it, delivered."""
    config = service_config(
        sink.endpoint,
        receiver={
            "grpc_endpoint": "127.0.0.1:0",
            "http_endpoint": "127.0.0.1:0",
            "auth": {"token": RECEIVER_TOKEN},
        },
    )
    svc = Service(config, clock_ns=clock)
    await svc.start()
    try:
        async with grpc.aio.insecure_channel(svc.addresses.grpc) as channel:
            assert await Ledger().send(channel, 0, 1) == grpc.StatusCode.UNAUTHENTICATED
        await asyncio.to_thread(sdk_send, svc.addresses.grpc, RECEIVER_TOKEN)
        assert len(await sink.wait_for_spans(1)) == 1
    finally:
        await svc.shutdown(grace_s=1.0)
    refused = svc.metrics.registry.get_sample_value(
        "user_enricher_requests_received_total", {"outcome": "unauthenticated"}
    )
    assert refused == 1


def test_hash_emails_keeps_email_and_name_off_the_span() -> None:
    """In hash mode the span gets user.hash and the id, never the email or the name."""
    kit = Kit(hasher=EmailHasher(b"k" * 16))
    kit.add(event(MIKE, T0 - 300 * MS))
    (span,) = sent(kit.receive(request_of(gateway_span())))
    got = attrs(span)
    assert "user.email" not in got and "user.name" not in got
    assert got["user.hash"] == EmailHasher(b"k" * 16)(" Mike.Chen@example.com")
    assert len(got["user.hash"]) == 32
    assert got["enduser.id"] == MIKE.id


def test_hashes_depend_on_the_key() -> None:
    """Without the key, the hash of a guessed address does not match."""
    assert EmailHasher(b"a" * 16)("x@example.com") != EmailHasher(b"b" * 16)("x@example.com")
