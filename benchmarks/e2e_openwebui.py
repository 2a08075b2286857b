"""Real-client end to end: a real Open WebUI 0.12.4 in front of the service (not a test).

Per mode, a fresh set of: a strict downstream sink (Jaeger's stand-in), the service
(default correlation settings), an AgentGateway-shaped stand-in
(:mod:`benchmarks.e2e_gateway`) and a real Open WebUI subprocess
(:mod:`benchmarks.e2e_webui_client`) from
``.venv-openwebui`` with ``deploy/openwebui/user_enricher_filter.py`` installed
through its own function API. Modes: "filter only" (Open WebUI's traces off) and
"traces on" (its OpenTelemetry traces go to the service too).

Each mode runs a WARM-UP (one user, sequential calls: the service learns the
event -> span lag per address from >= correlation.lag_min_samples clean samples,
reported separately) and then the MEASURED phase (users chatting at once through
``POST /api/chat/completions``), and scores every gateway span the sink received
against the user named by a marker in the prompt.

Usage: make e2e-openwebui  (or: .venv/bin/python -m benchmarks.e2e_openwebui [--help])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from benchmarks.e2e_gateway import GatewayCall, StandInGateway
from benchmarks.e2e_webui_client import (
    OPENWEBUI,
    USERS,
    OpenWebUI,
    chat,
    measured,
    openwebui_env,
    set_up,
)
from processor.app.config import parse_config
from processor.app.service import Service
from processor.correlate.lag import LagSummary
from processor.model import Session
from processor.tools.sink import TraceSink

DRAIN_TIMEOUT_S = 30.0  # bounded wait for the gateway spans at the sink


@dataclass(slots=True)
class Score:
    """How the gateway spans of one phase came out."""

    spans: int = 0
    right: int = 0
    wrong: int = 0
    none: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    no_user_why: Counter[str] = field(default_factory=Counter)

    @property
    def share(self) -> float:
        """Share of spans given the right user (0 when there are none)."""
        return self.right / self.spans if self.spans else 0.0


@dataclass(slots=True)
class ModeResult:
    """Everything one mode measured."""

    name: str
    calls: int
    scores: dict[str, Score]
    events_stored: float
    event_kinds: Counter[str]
    lag_ms: dict[str, list[float]]  # phase -> hook-to-span-start lag of each call's own event
    joined: int
    webui_spans: int
    webui_enriched: Counter[str]  # Open WebUI's own spans the service annotated, by method
    peers: int
    lags: dict[str, LagSummary]
    seconds: float


def service_data(sink_endpoint: str, token: str) -> dict[str, Any]:
    """The service's config: loopback ephemeral ports, DEFAULT correlation settings."""
    return {
        "receiver": {"grpc_endpoint": "127.0.0.1:0", "http_endpoint": "127.0.0.1:0"},
        "exporter": {"endpoint": sink_endpoint, "insecure": True},
        "api": {"endpoint": "127.0.0.1:0", "token": token},
        "logging": {"level": "warning"},
    }


async def run_mode(name: str, traces: bool, args: argparse.Namespace) -> ModeResult:
    """One mode end to end, on fresh instances; always cleans up."""
    began = time.monotonic()
    rng = random.Random(args.seed)
    token = secrets.token_urlsafe(24)
    say = _progress(name)
    async with contextlib.AsyncExitStack() as stack:
        sink = TraceSink()
        await sink.start()
        stack.push_async_callback(sink.stop)
        config = parse_config(service_data(sink.endpoint, token), base_dir=Path.cwd(), env={})
        service = Service(config)
        events = _record_events(service)
        await service.start()
        stopped = False

        async def stop_service() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                await service.shutdown(grace_s=2.0)

        stack.push_async_callback(stop_service)
        gateway = StandInGateway(service.addresses.grpc)
        openai_base = await gateway.start()
        stack.push_async_callback(gateway.stop)
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="e2e-owui-")))
        client = await stack.enter_async_context(aiohttp.ClientSession())
        env = openwebui_env(data_dir, openai_base, service.addresses.grpc if traces else None)
        webui = OpenWebUI(data_dir, env)
        stack.push_async_callback(webui.stop)
        grpc_at, api_at = service.addresses.grpc, service.addresses.http
        say(f"service grpc {grpc_at}, api {api_at}; starting Open WebUI")
        try:
            t0 = time.monotonic()
            await webui.start(client)
            say(f"Open WebUI ready on {webui.base} after {time.monotonic() - t0:.1f} s")
            tokens = await set_up(client, webui.base, f"http://{service.addresses.http}", token)
            say(f"admin + {len(tokens)} users signed up; filter installed, active, global")
            say(
                f"warm-up: {USERS[0]} makes {args.warmup} sequential calls, "
                f"0-{args.warmup_pause} s apart (lag learning)"
            )
            for n in range(args.warmup):
                await asyncio.sleep(rng.uniform(0, args.warmup_pause))  # think time
                await chat(client, webui.base, tokens[0], USERS[0], "warmup", n, n % 2 == 0)
            say(f"measured: {len(USERS)} users x {args.chats} chats at once, 0-1.5 s apart")
            await measured(client, webui.base, tokens, args.chats, rng)
        except Exception:
            print(f"--- Open WebUI log tail ({name}) ---\n{webui.tail()}", file=sys.stderr)
            raise
        await webui.stop()  # no more calls; also makes its SDK flush its last spans
        await asyncio.to_thread(gateway.flush)
        expected = len(gateway.calls)
        say(f"{expected} gateway calls; waiting for their spans at the sink")
        with contextlib.suppress(TimeoutError):
            await _wait_gateway_spans(sink, expected, DRAIN_TIMEOUT_S)
        lags = _lag_summaries(service)
        pushed = service.metrics.sessions_pushed.value(("http",))
        await stop_service()  # releases anything still held
        spans = sink.spans("agentgateway")
        own = sink.spans("open-webui")
        webui_spans = len(own)
        webui_enriched = Counter(
            f"{a.get('user.attribution.method')}/{a.get('user.attribution.confidence')}"
            for a in ({kv.key: kv.value.string_value for kv in sp.attributes} for sp in own)
            if "user.attribution.method" in a
        )
        say(f"{len(spans)} gateway spans at the sink after the service stopped")
    return ModeResult(
        name=name,
        calls=expected,
        scores=score(spans, gateway.calls),
        events_stored=pushed,
        event_kinds=Counter(e.kind for e in events),
        lag_ms=observed_lags(gateway.calls, events),
        joined=sum(c.joined_trace for c in gateway.calls),
        webui_spans=webui_spans,
        webui_enriched=webui_enriched,
        peers=len(gateway.peers),
        lags=lags,
        seconds=time.monotonic() - began,
    )


def observed_lags(calls: list[GatewayCall], events: list[Session]) -> dict[str, list[float]]:
    """Per phase, each call's lag behind its own user's latest earlier event, in ms."""
    by_user: dict[str, list[int]] = {}
    for event in events:
        by_user.setdefault(event.user.email, []).append(event.start_ns)
    out: dict[str, list[float]] = {}
    for call in calls:
        starts = [t for t in by_user.get(f"{call.user}@example.com", []) if t <= call.arrived_ns]
        if starts:
            out.setdefault(call.phase, []).append((call.arrived_ns - max(starts)) / 1e6)
    return out


def score(spans: list[Span], calls: list[GatewayCall]) -> dict[str, Score]:
    """Each phase's score: the span's user.email against the prompt marker's user."""
    truth = {c.span_id: c for c in calls}
    scores = {"warmup": Score(), "measured": Score(), "unknown": Score()}
    seen: set[str] = set()
    for span in spans:
        span_id = span.span_id.hex()
        if span_id in seen:
            continue
        seen.add(span_id)
        call = truth.get(span_id)
        s = scores[call.phase if call is not None and call.phase in scores else "unknown"]
        attrs = {kv.key: kv.value.string_value for kv in span.attributes}
        got = attrs.get("user.email", "")
        s.spans += 1
        if not got:
            s.none += 1
            s.no_user_why[attrs.get("user.attribution.confidence") or "nothing matched"] += 1
        elif call is not None and got == f"{call.user}@example.com":
            s.right += 1
            s.methods[attrs.get("user.attribution.method", "?")] += 1
        else:
            s.wrong += 1
    return scores


def report(results: list[ModeResult], warmup: int) -> int:
    """Print the figures; the exit status (1 when a threshold is missed)."""
    cells = ("spans", "right", "wrong", "no user", "right %")
    head = f"{'mode':<12} {'phase':<9} " + " ".join(f"{c:>7}" for c in cells)
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        for phase in ("warmup", "measured"):
            s = r.scores[phase]
            print(
                f"{r.name:<12} {phase:<9} {s.spans:>7} {s.right:>7} {s.wrong:>7} {s.none:>7} "
                f"{100 * s.share:>6.1f}%"
            )
    print(
        f"\nWARM-UP ({warmup} sequential calls by one user, random think time) is not in the "
        "measured figures:\nthe service learns each address's event->span lag from >= 30 "
        "clean samples (correlation.lag_min_samples) first."
    )
    failures = []
    for r in results:
        m = r.scores["measured"]
        print(
            f"\n[{r.name}] {r.calls} calls in {r.seconds:.0f} s; filter events stored "
            f"{r.events_stored:.0f}; spans joined to Open WebUI's trace {r.joined}; "
            f"distinct src.addr {r.peers}; open-webui spans forwarded {r.webui_spans}"
        )
        print(
            f"  measured, right by method: {dict(m.methods)}; "
            f"no user because: {dict(m.no_user_why)}"
        )
        for ip, lag in r.lags.items():
            print(
                f"  learned lag at {ip}: p50 {lag.p50_ns / 1e6:.1f} ms, "
                f"p99 {lag.p99_ns / 1e6:.1f} ms, samples {lag.samples:.0f}, window "
                f"[{lag.window.lo_ns / 1e6:.0f}, {lag.window.hi_ns / 1e6:.0f}] ms"
            )
        for phase, lags_ms in r.lag_ms.items():
            ordered = sorted(lags_ms)
            print(
                f"  observed {phase} lag, filter hook -> gateway span start: "
                f"min {ordered[0]:.1f} / p50 {ordered[len(ordered) // 2]:.1f} / "
                f"max {ordered[-1]:.1f} ms ({len(ordered)} calls)"
            )
        w = r.scores["warmup"]
        if r.webui_spans:
            print(f"  open-webui spans annotated by the service: {dict(r.webui_enriched)}")
        print(
            f"  event kinds stored: {dict(r.event_kinds)}; warm-up no user: {dict(w.no_user_why)}"
        )
        if not r.lags:
            print("  learned lag: none (the configured window applied)")
        total = sum(s.spans for s in r.scores.values())
        if total < r.calls:
            failures.append(f"{r.name}: {r.calls - total} gateway spans never reached the sink")
        if any(s.wrong for s in r.scores.values()):
            failures.append(f"{r.name}: spans with the WRONG user")
        floor = 1.0 if r.name == "traces on" else 0.9
        if m.share < floor:
            failures.append(f"{r.name}: {100 * m.share:.1f}% right, below {100 * floor:.0f}%")
    for failure in failures:
        print(f"FAIL {failure}")
    if not failures:
        print("\nOK: thresholds met (filter only >= 90% right, traces on 100%, no wrong user)")
    return 1 if failures else 0


async def main(argv: list[str] | None = None) -> int:
    """Run the chosen modes in turn and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--modes", default="filter,traces", help="comma list of filter,traces")
    parser.add_argument("--warmup", type=int, default=40, help="sequential warm-up calls")
    parser.add_argument(
        "--warmup-pause",
        type=float,
        default=1.5,
        help="max random think time before each warm-up call, s (0: back to back)",
    )
    parser.add_argument("--chats", type=int, default=4, help="measured chats per user")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not OPENWEBUI.exists():
        print(f"{OPENWEBUI} missing: run `make e2e-openwebui` (it installs it)", file=sys.stderr)
        return 2
    names = {"filter": ("filter only", False), "traces": ("traces on", True)}
    results = [await run_mode(*names[m], args) for m in args.modes.split(",")]
    return report(results, args.warmup)


async def _wait_gateway_spans(sink: TraceSink, count: int, timeout_s: float) -> None:
    """Poll the sink until it holds ``count`` gateway spans; TimeoutError after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while len(sink.spans("agentgateway")) < count:  # noqa: ASYNC110 - the sink's condition is private
            await asyncio.sleep(0.1)


def _record_events(service: Service) -> list[Session]:
    """Every session/event the service stores, in order (wraps the pipeline's hook)."""
    events: list[Session] = []
    release = service.pipeline.session_stored

    def record(session: Session) -> None:
        events.append(session)
        release(session)

    service.pipeline.session_stored = record  # type: ignore[method-assign]
    return events


def _lag_summaries(service: Service) -> dict[str, LagSummary]:
    """The learned lags the service reports now, keyed by their printed source."""
    lags = service.correlator.lags
    if lags is None:
        return {}
    return {_source_name(k): v for k, v in lags.summaries(time.time_ns()).items()}


def _source_name(key: object) -> str:
    """A lag source (an address, or an (address, event kind) pair) as text."""
    return " ".join(str(part) for part in key) if isinstance(key, tuple) else str(key)


def _progress(mode: str) -> Callable[[str], None]:
    """A printer of timestamped progress lines for ``mode``."""
    start = time.monotonic()

    def say(text: str) -> None:
        print(f"[{mode} +{time.monotonic() - start:5.1f}s] {text}", flush=True)

    return say


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
