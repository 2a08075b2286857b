"""An AgentGateway-shaped, OpenAI-compatible stand-in for the Open WebUI end-to-end run.

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` (streamed as SSE or not)
on 127.0.0.1 and, for every chat call, emits ONE span the way AgentGateway v1.x
does (see DOMAIN.md): service ``agentgateway``, a SERVER span named ``POST /*``
that starts when the request arrived, ``src.addr`` = the TCP peer ``ip:port``,
``gen_ai.*`` model and token counts, and a parent taken from an incoming W3C
``traceparent``. Spans go out through the real OpenTelemetry SDK OTLP/gRPC
exporter. Each call is also recorded with its ground truth: the user and phase
named by a marker the end-to-end driver puts into the prompt.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

MODEL = "gpt-4o-mini"
MARKER = re.compile(r"\[\[e2e user=(?P<user>[^ \]]+) phase=(?P<phase>[a-z]+) n=(?P<n>\d+)\]\]")
STREAM_CHUNKS = 4
CHUNK_DELAY_S = 0.04  # between streamed chunks
REPLY_DELAY_S = 0.15  # "provider latency" before a non-streamed answer


def marker(user: str, phase: str, n: int) -> str:
    """The ground-truth tag the driver writes into a prompt (read back by the stand-in)."""
    return f"[[e2e user={user} phase={phase} n={n}]]"


@dataclass(frozen=True, slots=True)
class GatewayCall:
    """One chat call the stand-in traced, with its ground truth."""

    span_id: str  # 16 hex digits
    trace_id: str  # 32 hex digits
    joined_trace: bool  # True when the caller sent a traceparent
    src_addr: str
    user: str  # ground truth from the prompt marker ("" when no marker)
    phase: str
    n: int
    streamed: bool
    arrived_ns: int


class StandInGateway:
    """The stand-in: an aiohttp server plus its own OTel SDK tracer provider."""

    def __init__(self, otlp_grpc_endpoint: str) -> None:
        """Export spans to ``otlp_grpc_endpoint`` (``host:port``, plaintext gRPC)."""
        self.calls: list[GatewayCall] = []
        self.models_requests = 0
        self._provider = TracerProvider(resource=Resource.create({"service.name": "agentgateway"}))
        exporter = OTLPSpanExporter(endpoint=f"http://{otlp_grpc_endpoint}", insecure=True)
        # Like any SDK: batched, here flushed every 500 ms.
        self._provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        self._tracer = self._provider.get_tracer("agentgateway")
        self._propagator = TraceContextTextMapPropagator()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.peers: set[str] = set()

    async def start(self) -> str:
        """Listen on 127.0.0.1 (a free port); returns the OpenAI base URL (``.../v1``)."""
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving, then flush and shut down the span exporter."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await asyncio.to_thread(self.flush)
        await asyncio.to_thread(self._provider.shutdown)

    def flush(self) -> bool:
        """Export every ended span now (blocking: call from a worker thread)."""
        return self._provider.force_flush(10_000)

    async def _models(self, request: web.Request) -> web.Response:
        """The OpenAI model list: one model."""
        self.models_requests += 1
        return web.json_response(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "e2e"}]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """One chat completion, traced as AgentGateway would trace it."""
        arrived_ns = time.time_ns()  # headers parsed: the gateway span starts here
        peer = request.transport.get_extra_info("peername") if request.transport else None
        src_addr = f"{peer[0]}:{peer[1]}" if peer else ""
        self.peers.add(src_addr)
        parent = self._propagator.extract(carrier=dict(request.headers))
        body: dict[str, Any] = await request.json()
        text = json.dumps(body.get("messages", []))
        found = MARKER.search(text)
        streamed = bool(body.get("stream"))
        model = str(body.get("model") or MODEL)
        tokens_in = max(1, len(text) // 4)
        tokens_out = 8 * STREAM_CHUNKS
        span = self._tracer.start_span(
            "POST /*",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=arrived_ns,
            attributes={
                "gateway": "default/agentgateway",
                "listener": "http",
                "route": "default/llm",
                "endpoint": "api.openai.com:443",
                "protocol": "llm",
                "src.addr": src_addr,
                "http.method": "POST",
                "http.host": request.host,
                "http.path": request.path,
                "http.version": f"HTTP/{request.version.major}.{request.version.minor}",
                "url.scheme": "http",
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
            },
        )
        context = span.get_span_context()
        self.calls.append(
            GatewayCall(
                span_id=format_span_id(context.span_id),
                trace_id=format_trace_id(context.trace_id),
                joined_trace=get_current_span(parent).get_span_context().is_valid,
                src_addr=src_addr,
                user=found["user"] if found else "",
                phase=found["phase"] if found else "",
                n=int(found["n"]) if found else -1,
                streamed=streamed,
                arrived_ns=arrived_ns,
            )
        )
        try:
            if streamed:
                response: web.StreamResponse = await self._stream(request, model, tokens_in)
            else:
                await asyncio.sleep(REPLY_DELAY_S)
                response = web.json_response(_completion(model, tokens_in, tokens_out))
            span.set_attribute("http.status", 200)
            span.set_attribute("gen_ai.response.model", model)
            span.set_attribute("gen_ai.usage.input_tokens", tokens_in)
            span.set_attribute("gen_ai.usage.output_tokens", tokens_out)
            return response
        finally:
            span.end()

    async def _stream(self, request: web.Request, model: str, tokens_in: int) -> web.StreamResponse:
        """An SSE answer: a few content chunks, a usage chunk, then ``[DONE]``."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chat_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        for i in range(STREAM_CHUNKS):
            await asyncio.sleep(CHUNK_DELAY_S)
            delta = {"role": "assistant", "content": f"part {i} "} if i == 0 else {}
            delta.setdefault("content", f"part {i} ")
            chunk = _chunk(chat_id, model, {"index": 0, "delta": delta, "finish_reason": None})
            await response.write(_sse(chunk))
        done = _chunk(chat_id, model, {"index": 0, "delta": {}, "finish_reason": "stop"})
        done["usage"] = _usage(tokens_in, 8 * STREAM_CHUNKS)
        await response.write(_sse(done))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _usage(tokens_in: int, tokens_out: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": tokens_in,
        "completion_tokens": tokens_out,
        "total_tokens": tokens_in + tokens_out,
    }


def _completion(model: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    """A non-streamed OpenAI chat completion."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "An answer from the stand-in."},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(tokens_in, tokens_out),
    }


def _chunk(chat_id: str, model: str, choice: dict[str, Any]) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    return {
        "id": chat_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def _sse(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data)}\n\n".encode()
