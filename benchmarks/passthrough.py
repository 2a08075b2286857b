"""A bare OTLP/gRPC pass-through proxy: the floor the service is measured against.

Receives Export calls as raw bytes, decodes them into an ExportTraceServiceRequest,
re-encodes, forwards to the downstream over one grpc.aio channel (no compression)
and answers the sender after the downstream acknowledged. ``--tune-malloc``
applies the glibc thresholds that ``serve`` applies (processor.app.tuning). ``--bytes``
forwards the received bytes without decoding them (the floor of any proxy).

Usage: python -m benchmarks.passthrough --forward HOST:PORT [--port 0] [--tune-malloc] [--bytes]
(prints {"grpc": "host:port", "malloc_tuned": bool} once listening)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from processor.app.tuning import tune_malloc

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
EXPORT_METHOD = f"/{TRACE_SERVICE}/Export"
MAX_MESSAGE = 64 << 20
_RESPONSE = ExportTraceServiceResponse().SerializeToString()


class Proxy:
    """Decode, re-encode, forward, then answer."""

    def __init__(self, forward: str, decode: bool = True) -> None:
        self._decode = decode
        self._channel = grpc.aio.insecure_channel(
            forward,
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
            ],
        )
        self._export = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )

    async def export(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """TraceService/Export."""
        data = (
            ExportTraceServiceRequest.FromString(raw).SerializeToString() if self._decode else raw
        )
        await self._export(data, timeout=10.0)
        return _RESPONSE


async def serve(port: int, forward: str, tuned: bool, decode: bool = True) -> None:
    """Listen on 127.0.0.1:``port`` until cancelled; print the bound address first."""
    proxy = Proxy(forward, decode)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE)])
    method = grpc.unary_unary_rpc_method_handler(
        proxy.export, request_deserializer=None, response_serializer=None
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": method})]
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(json.dumps({"grpc": f"127.0.0.1:{bound}", "malloc_tuned": tuned}), flush=True)
    await server.wait_for_termination()


def main() -> None:
    """Run the proxy until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--forward", required=True, metavar="HOST:PORT")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tune-malloc", action="store_true", help="as serve does")
    parser.add_argument("--bytes", action="store_true", help="forward without decoding")
    args = parser.parse_args()
    tuned = tune_malloc() if args.tune_malloc else False
    try:
        asyncio.run(serve(args.port, args.forward, tuned, not args.bytes))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
