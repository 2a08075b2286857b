"""Opening the listeners: binding the gRPC server and the HTTP apps (TLS when configured)."""

from __future__ import annotations

import grpc
from aiohttp import web

from processor.config.scalars import split_endpoint
from processor.config.tls import TlsConfig
from processor.receive.auth import grpc_server_credentials, http_ssl_context
from processor.receive.guard import ConnectionGuard, GuardedSite

# How long an HTTP listener's requests in flight may finish at shutdown (then cancelled).
HTTP_SHUTDOWN_S = 5.0


async def start_grpc(server: grpc.aio.Server, endpoint: str, tls: TlsConfig) -> str:
    """Bind ``server`` to ``endpoint`` and start it; returns the bound ``host:port``."""
    host, port = split_endpoint(endpoint)
    address = join(host, port)
    try:
        bound = (
            server.add_secure_port(address, grpc_server_credentials(tls))
            if tls.enabled
            else server.add_insecure_port(address)
        )
    except RuntimeError:  # grpcio raises this (not OSError) when the bind fails
        bound = 0
    if bound == 0:
        raise OSError(
            f"cannot listen on {endpoint} (receiver.grpc_endpoint): address in use or not available"
        )
    await server.start()
    return join(host, bound)


def http_runner(app: web.Application, idle_timeout_s: float) -> web.AppRunner:
    """A runner for one HTTP listener: no access log, no signal handling of its own."""
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        keepalive_timeout=idle_timeout_s,
        shutdown_timeout=HTTP_SHUTDOWN_S,
    )


async def start_http(
    runner: web.AppRunner, endpoint: str, tls: TlsConfig, guard: ConnectionGuard
) -> str:
    """Serve ``runner``'s app on ``endpoint`` (TLS when configured) behind ``guard``."""
    runner.app.middlewares.append(guard.middleware)
    await runner.setup()
    host, port = split_endpoint(endpoint)
    site = GuardedSite(
        runner,
        host,
        port,
        reuse_port=False,
        ssl_context=http_ssl_context(tls) if tls.enabled else None,
        guard=guard,
    )
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound: int = runner.addresses[0][1]
    return join(host, bound)


def join(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
