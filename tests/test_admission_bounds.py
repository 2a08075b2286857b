"""The queue's bounds hold under concurrent accepts, also while spool writes are in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import grpc
from conftest import service_config
from fault_kit import EXPORT, batch

from processor.app.service import Service
from processor.tools.sink import TraceSink

MiB = 1024 * 1024


SENDERS = 32


async def send_all(service: Service, payloads: list[bytes]) -> list[grpc.StatusCode]:
    """Send every payload at once, one call each; the status of each."""
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)

        async def send(payload: bytes) -> grpc.StatusCode:
            try:
                await call(payload, timeout=20)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        return await asyncio.gather(*(send(p) for p in payloads))


async def test_concurrent_accepts_do_not_overshoot_the_queue(
    sink: TraceSink, tmp_path: Path
) -> None:
    """Ten ~300 KB requests at once into a 1 MiB queue (spool on): at most three accepted."""
    sink.gate = asyncio.Event()  # the downstream answers nothing: nothing leaves the queue
    config = service_config(
        sink.endpoint,
        queue={"max_bytes": "1MiB", "merge_bytes": 0, "directory": str(tmp_path / "spool")},
    )
    service = Service(config)
    await service.start()
    payloads = [batch(1 + 2000 * n, 2000) for n in range(10)]
    size = len(payloads[0])
    try:
        codes = await send_all(service, payloads)
        accepted = codes.count(grpc.StatusCode.OK)
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert 1 <= accepted <= MiB // size
        assert service.queue.bytes <= MiB
    finally:
        sink.gate.set()
        await service.shutdown(grace_s=1.0)


async def test_32_senders_cannot_overfill_the_queue_by_count_or_bytes(sink: TraceSink) -> None:
    """32 senders at once against a hung downstream: the queue holds at most ``size``
    requests and ``max_bytes`` bytes; everything beyond is RESOURCE_EXHAUSTED."""
    sink.gate = asyncio.Event()
    for queue, count in (({"size": 5, "merge_bytes": 0}, 10), ({"max_bytes": "1MiB"}, 1500)):
        service = Service(service_config(sink.endpoint, queue=queue))
        await service.start()
        try:
            payloads = [batch(1 + 10_000 * n, count) for n in range(SENDERS)]
            codes = await send_all(service, payloads)
            assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) > 0
            # Requests taken off the queue by the consumers are in flight, not queued.
            assert len(service.queue) <= service.config.exporter.queue.size
            assert service.queue.bytes <= service.config.exporter.queue.max_bytes
        finally:
            sink.gate.set()
            await service.shutdown(grace_s=1.0)
            sink.gate = asyncio.Event()
    sink.gate.set()


async def test_32_senders_cannot_overfill_the_hold(sink: TraceSink) -> None:
    """Holding on, 32 senders of 20 spans each at once: never more than max_held_spans held,
    and every span arrives (the oldest forced out early, attributed as far as known)."""
    config = service_config(sink.endpoint, correlation={"hold": "6s", "max_held_spans": 100})
    service = Service(config)
    await service.start()
    try:
        codes = await send_all(service, [batch(1 + 100 * n, 20) for n in range(SENDERS)])
        assert codes == [grpc.StatusCode.OK] * SENDERS
        assert service.correlator.held <= 100
        await sink.wait_for_spans(SENDERS * 20 - service.correlator.held)
    finally:
        await service.shutdown(grace_s=1.0)
    assert len(set(sink.span_ids())) == SENDERS * 20


async def test_the_in_flight_budget_refuses_before_reading(sink: TraceSink) -> None:
    """32 senders of ~1 MB over gRPC and OTLP/HTTP against a hung downstream and a 4 MiB
    budget: the bytes held in flight never pass it by more than one request, the refused
    hear RESOURCE_EXHAUSTED with RetryInfo or 429 with Retry-After, and all is given back."""
    sink.gate = asyncio.Event()
    config = service_config(
        sink.endpoint,
        receiver={
            "grpc_endpoint": "127.0.0.1:0",
            "http_endpoint": "127.0.0.1:0",
            "max_inflight_bytes": "4MiB",
        },
    )
    service = Service(config)
    await service.start()
    payloads = [batch(1 + 20_000 * n, 20_000) for n in range(SENDERS)]
    size = len(payloads[0])
    try:
        async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
            call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)

            async def over_grpc(payload: bytes) -> tuple[str, bool]:
                try:
                    await call(payload, timeout=20)
                except grpc.aio.AioRpcError as exc:
                    keys = {key for key, _ in exc.trailing_metadata() or ()}
                    return exc.code().name, "google.rpc.retryinfo-bin" in keys
                return "OK", False

            async def over_http(client: aiohttp.ClientSession, payload: bytes) -> tuple[str, bool]:
                url = f"http://{service.addresses.otlp_http}/v1/traces"
                headers = {"Content-Type": "application/x-protobuf"}
                async with client.post(url, data=payload, headers=headers) as reply:
                    await reply.read()
                    return str(reply.status), "Retry-After" in reply.headers

            async with aiohttp.ClientSession() as client:
                half = SENDERS // 2
                answers = await asyncio.gather(
                    *(over_grpc(p) for p in payloads[:half]),
                    *(over_http(client, p) for p in payloads[half:]),
                )
        refused = [a for a in answers if a[0] in ("RESOURCE_EXHAUSTED", "429")]
        assert {a[0] for a in answers} <= {"OK", "200", "RESOURCE_EXHAUSTED", "429"}
        assert refused and all(told for _, told in refused)
        assert {"RESOURCE_EXHAUSTED", "429"} <= {a[0] for a in refused}
        assert service.inflight.peak <= 4 * MiB + 2 * size
        assert service.inflight.used == 0
    finally:
        sink.gate.set()
        await service.shutdown(grace_s=1.0)


def test_a_request_alone_may_exceed_the_budget_others_wait() -> None:
    """One request larger than the budget passes when nothing else is in flight (the
    message limit stays the only limit on one request); a second one is refused."""
    from processor.errors import Backpressure
    from processor.receive.budget import InflightBudget

    budget = InflightBudget(100, retry_after_s=2.0)
    with budget.holding(150) as held:
        held.grow(50)  # decompressed: alone, it may grow too
        try:
            budget.take(1)
        except Backpressure as exc:
            assert exc.retry_after_s == 2.0
        else:
            raise AssertionError("a second request fitted past the budget")
    assert budget.used == 0 and budget.peak == 200 and budget.refused == 1
