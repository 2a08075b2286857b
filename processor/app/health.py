"""The gRPC health service's states: what probes and load balancers are told."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

from processor.identity.intake.grpc_sessions import SERVICE_NAME as SESSION_SERVICE

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Health:
    """Serving once started; the session API follows the shared store's connection."""

    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()

    async def serving(self) -> None:
        """Every service (and the server as a whole) answers SERVING."""
        for service in ("", TRACE_SERVICE, SESSION_SERVICE):
            await self.servicer.set(service, _SERVING)

    def store_state(self, connected: bool) -> None:
        """The session API is NOT_SERVING while the shared store is away."""
        status = _SERVING if connected else _NOT_SERVING
        asyncio.get_running_loop().create_task(self.servicer.set(SESSION_SERVICE, status))

    async def shutting_down(self) -> None:
        """Every service answers NOT_SERVING from now on."""
        await self.servicer.enter_graceful_shutdown()
