"""The queue's bounds hold under concurrent accepts, also while spool writes are in flight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from conftest import service_config
from fault_kit import EXPORT, batch

from processor.service import Service
from processor.sink import TraceSink

MiB = 1024 * 1024


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
        async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
            call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)

            async def send(payload: bytes) -> grpc.StatusCode:
                try:
                    await call(payload, timeout=20)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

            codes = await asyncio.gather(*(send(p) for p in payloads))
        accepted = codes.count(grpc.StatusCode.OK)
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert 1 <= accepted <= MiB // size
        assert service.queue.bytes <= MiB
    finally:
        sink.gate.set()
        await service.shutdown(grace_s=1.0)
