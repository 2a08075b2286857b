"""The shipped dashboard and alerts, evaluated by a real Prometheus scraping a real service.

One run: Prometheus (Debian's ``prometheus``) scrapes the service every second
while a traffic script plays three phases — normal calls by three users, a
downstream that refuses a batch for good, and a full export queue. Every
dashboard query and every alert expression is then evaluated at the time of the
last scrape, over windows longer than the run, so ``increase()`` and ``rate()``
cover the whole run exactly and each result can be compared with what the
script sent. It covers the cases that went wrong before: the first dropped spans
fire ``UserEnricherSpansDropped``, a single call of a new user shows its cost in
``increase()``, export latency is observed, and the in-memory store reads as
connected.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yaml
from conftest import TOKEN, Clock, free_port, push_sessions, service_config, wait_until
from correlation_kit import gateway_span, kv, request_of
from fault_kit import EXPORT, batch
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from processor.app.service import Service
from processor.metrics import ENRICHED as KNOWN_ENRICHED
from processor.tools.sink import TraceSink

ROOT = Path(__file__).parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed")

MIKE, ANA, SAM = "mike.chen@example.com", "ana.lima@example.com", "sam.okafor@example.com"
ADDR_MIKE, ADDR_SHARED = "10.1.0.1", "10.2.0.2"  # ana and sam share one address
RUN = 3600.0  # seconds: every window covers the whole run
Labels = frozenset[tuple[str, str]]
Result = dict[Labels, float]


def labels(**pairs: str) -> Labels:
    """A result series' labels."""
    return frozenset(pairs.items())


NONE = labels()


def llm(provider: str, model: str, tokens_in: int, tokens_out: int, **extra: Any) -> list[KeyValue]:
    """AgentGateway's usage attributes of one call."""
    values: dict[str, Any] = {
        "gen_ai.provider.name": provider,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": tokens_in,
        "gen_ai.usage.output_tokens": tokens_out,
        "http.status": 200,
        **extra,
    }
    return [kv(k, v) for k, v in values.items()]


# ---------------------------------------------------------------------- the traffic script
#
# phase 1, one request of five spans:
#   mike, by his session on his address: anthropic/claude-sonnet-4, 41 in, 100 out, $0.25
#   ana, identity on the span: openai/gpt-4o, 10 in, 20 out
#   ana, identity on the span: openai/gpt-4o, 5 in, 0 out, HTTP 500
#   nobody: the shared address has two sessions (ambiguous): openai/gpt-4o, 1 in, 1 out
#   nobody: no address, not an LLM call
# phase 2: one request of 14 plain spans from an unknown address; the downstream refuses it
# phase 3: the downstream hangs; two one-span requests fill the queue (size 2), a third
#   is refused with RESOURCE_EXHAUSTED; then the downstream recovers.
SPANS_RECEIVED = 5 + 14 + 2
SPANS_EXPORTED = 5 + 2
ENRICHED = {  # every known (method, confidence) series exists from the start
    **{labels(method=m, confidence=c): 0.0 for m, c in KNOWN_ENRICHED},
    labels(method="session", confidence="high"): 1.0,
    labels(method="span", confidence="exact"): 2.0,
}
UNMATCHED = 1 + 14 + 2  # phase 1's last span, phase 2, phase 3 (ambiguous spans are not counted)
NO_ADDRESS = 1  # phase 1's last span; phases 2 and 3 come from an address nobody reported
CALLS = {  # (user, provider, model) -> (calls, input, output, cost, errors)
    (MIKE, "anthropic", "claude-sonnet-4"): (1, 41, 100, 0.25, 0),
    (ANA, "openai", "gpt-4o"): (2, 15, 20, 0.0, 1),
    ("unknown", "openai", "gpt-4o"): (1, 1, 1, 0.0, 0),
}


def per(keys: tuple[str, ...], column: int) -> Result:
    """Sum one column of CALLS by the named labels (user, provider, model; team is none)."""
    out: Result = {}
    for (user, provider, model), row in CALLS.items():
        named = {"user": user, "team": "none", "provider": provider, "model": model}
        key = labels(**{k: named[k] for k in keys})
        out[key] = out.get(key, 0.0) + row[column]
    return out


def total(column: int) -> float:
    """One column of CALLS summed."""
    return sum(row[column] for row in CALLS.values())


def tokens(keys: tuple[str, ...]) -> Result:
    """Tokens by the named labels, both directions added."""
    ins, outs = per(keys, 1), per(keys, 2)
    return {k: ins[k] + outs[k] for k in ins}


def by_direction() -> Result:
    """Tokens by user and direction; a direction with no tokens has no series."""
    out: Result = {}
    for column, direction in ((1, "input"), (2, "output")):
        for key, value in per(("user",), column).items():
            if value:
                out[key | {("direction", direction)}] = value
    return out


def nonzero(result: Result) -> Result:
    """Series that exist: a counter never incremented has none."""
    return {k: v for k, v in result.items() if v}


def rate(result: Result) -> Result:
    """``rate()`` over the run's window: the increase per second."""
    return {k: v / RUN for k, v in result.items()}


def ratio(top: Result, bottom: Result) -> Result:
    """Series-wise division, as PromQL matches them."""
    return {k: top[k] / bottom[k] for k in top if bottom.get(k)}


SHARE = {k: v / total(0) for k, v in per(("user", "provider", "model"), 0).items()}
ERRORS = nonzero(per(("user",), 4))
DROPPED = {labels(code="INVALID_ARGUMENT"): 14.0}
ENRICHED_TOTAL = sum(ENRICHED.values())
OUTCOMES = {labels(outcome="ok"): 4.0, labels(outcome="backpressure"): 1.0}


@dataclass(frozen=True)
class Each:
    """The expected value of a per-instance query (one instance here)."""

    value: float


# Panel title -> the expected result of each of its targets, in order (None: check shape only).
PANELS: dict[str, list[Result | Each | None]] = {
    "LLM cost": [{NONE: total(3)}],
    "LLM tokens": [{NONE: total(1) + total(2)}],
    "LLM calls": [{NONE: total(0)}],
    "Attribution coverage (selected range)": [{NONE: ENRICHED_TOTAL / SPANS_RECEIVED}],
    "Attribution coverage": [
        {NONE: ENRICHED_TOTAL / SPANS_RECEIVED},
        {NONE: UNMATCHED / SPANS_RECEIVED},
        {NONE: 1 / SPANS_RECEIVED},
    ],
    "Tokens per user (input / output)": [rate(by_direction())],
    "Cost per user (USD, selected range)": [nonzero(per(("user",), 3))],
    "Requests per user": [rate(per(("user",), 0))],
    "Error rate per user": [ratio(ERRORS, per(("user",), 0))],
    "Top 10 users by cost (selected range)": [nonzero(per(("user",), 3))],
    "Top 10 users by tokens (selected range)": [tokens(("user",))],
    "Usage per user (selected range)": [
        per(("user", "team"), 0),
        per(("user", "team"), 1),
        nonzero(per(("user", "team"), 2)),
        nonzero(per(("user", "team"), 3)),
        ERRORS and {k | {("team", "none")}: v for k, v in ERRORS.items()},
    ],
    "Cost by team (USD, selected range)": [nonzero(per(("team",), 3))],
    "Requests by provider": [rate(per(("provider",), 0))],
    "Requests by model": [rate(per(("provider", "model"), 0))],
    "Provider preferences per user (selected range)": [
        per(("user", "provider", "model"), 0),
        ratio(
            per(("user", "provider", "model"), 0),
            {k: per(("user",), 0)[labels(user=dict(k)["user"])] for k in SHARE},
        ),
    ],
    "Cost by provider and model (USD, selected range)": [nonzero(per(("provider", "model"), 3))],
    "Enriched spans by method and confidence": [
        {k: v / SPANS_RECEIVED for k, v in ENRICHED.items()}
    ],
    "Ambiguous spans by policy": [rate({labels(policy="skip"): 1.0})],
    "Unmatched spans": [rate({NONE: UNMATCHED}), rate({NONE: NO_ADDRESS})],
    "LLM calls without a user of their own": [
        {NONE: per(("user",), 0)[labels(user="unknown")] / total(0)},
        {},
    ],
    "Spans held and released": [  # hold 0: nothing is held, and the reasons exist at 0
        rate({NONE: 0.0}),
        {labels(reason=r): 0.0 for r in ("early", "deadline", "forced")},
    ],
    "Spans holding now": [Each(0.0)],
    "Export queue (batches)": [Each(0.0)],
    "Export queue (bytes)": [Each(0.0)],
    "Export latency": [None, None],
    "Spans dropped and lost": [DROPPED, {NONE: 0.0}],
    "Spans received and exported": [rate({NONE: SPANS_RECEIVED}), rate({NONE: SPANS_EXPORTED})],
    "Export calls by outcome": [
        rate(
            {
                **{
                    labels(outcome=o): 0.0 for o in ("empty", "invalid", "unauthenticated", "error")
                },
                **OUTCOMES,
            }
        )
    ],
    "Session store connected": [Each(1.0)],
    "Sessions active": [Each(3.0)],
    "Export retries and failures": [{}, rate({labels(code="INVALID_ARGUMENT"): 1.0})],
}
# Alert -> its expression's result at the end of the run ({}: it does not fire).
ALERTS: dict[str, Result] = {
    "UserEnricherSpansLost": {},
    "UserEnricherSpansDropped": DROPPED,
    "UserEnricherSessionStoreDisconnected": {},
    "UserEnricherAttributionCoverageLow": {NONE: ENRICHED_TOTAL / SPANS_RECEIVED},
    "UserEnricherBackpressure": {NONE: 1 / 300},
    "UserEnricherExportQueueNearFull": {},
}


# ---------------------------------------------------------------------- Prometheus


@dataclass
class Prometheus:
    """A running Prometheus server and a client for its HTTP API."""

    url: str
    client: aiohttp.ClientSession

    async def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate an instant query (at ``at``, Unix seconds); the result vector."""
        params = {"query": expr, **({"time": repr(at)} if at is not None else {})}
        async with self.client.get(f"{self.url}/api/v1/query", params=params) as reply:
            body = await reply.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def ready(self) -> bool:
        """Whether the server answers its readiness probe."""
        try:
            async with self.client.get(f"{self.url}/-/ready") as reply:
                return reply.status == 200
        except aiohttp.ClientError:
            return False

    async def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now, or None when it has no result."""
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None

    async def firing(self) -> set[str]:
        """The names of the alerts firing now."""
        async with self.client.get(f"{self.url}/api/v1/alerts") as reply:
            body = await reply.json()
        return {a["labels"]["alertname"] for a in body["data"]["alerts"] if a["state"] == "firing"}


def prometheus_config(target: str, jobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Scrape ``target`` every second and evaluate the shipped rules every second.

    ``jobs`` replaces the one plain scrape job (their targets as given).
    """
    plain = [{"job_name": "user-enricher", "static_configs": [{"targets": [target]}]}]
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": plain if jobs is None else jobs,
    }


@pytest.fixture
async def prometheus_for(tmp_path: Path) -> AsyncIterator[Any]:
    """Start Prometheus scraping a given target; stop it afterwards."""
    processes: list[asyncio.subprocess.Process] = []
    clients: list[aiohttp.ClientSession] = []

    async def start(target: str, jobs: list[dict[str, Any]] | None = None) -> Prometheus:
        shutil.copy(GRAFANA / "alerts.yml", tmp_path / "alerts.yml")
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(target, jobs)))
        port = free_port()
        assert PROMETHEUS is not None
        with (tmp_path / "prometheus.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        processes.append(process)
        clients.append(aiohttp.ClientSession())
        server = Prometheus(f"http://127.0.0.1:{port}", clients[-1])
        await until(server.ready, timeout_s=30)
        return server

    yield start
    for client in clients:
        await client.close()
    for process in processes:
        process.terminate()
        await process.wait()


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 60.0) -> None:
    """Poll an async ``condition`` until it holds (Prometheus scrapes on its own clock)."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - nothing signals a scrape
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------------- the run


async def send(service: Service, payload: bytes) -> grpc.StatusCode:
    """One raw Export call; its status."""
    async with grpc.aio.insecure_channel(service.addresses.grpc) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        try:
            await call(payload, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def phase_one(now: int) -> bytes:
    """The five spans of phase 1."""
    return request_of(
        gateway_span(1, now, f"{ADDR_MIKE}:40312", extra=llm(
            "anthropic", "claude-sonnet-4", 41, 100, **{"agw.ai.usage.cost.total": "0.25"}
        )),
        gateway_span(2, now, None, extra=[*llm("openai", "gpt-4o", 10, 20), kv("user.email", ANA)]),
        gateway_span(3, now, None, extra=[
            *llm("openai", "gpt-4o", 5, 0, **{"http.status": 500}), kv("user.email", ANA)
        ]),
        gateway_span(4, now, f"{ADDR_SHARED}:40400", extra=llm("openai", "gpt-4o", 1, 1)),
        gateway_span(5, now, None),
    ).SerializeToString()  # fmt: skip


async def play(service: Service, sink: TraceSink, now: int) -> None:
    """The three phases of the traffic script."""
    for ip, email in ((ADDR_MIKE, MIKE), (ADDR_SHARED, ANA), (ADDR_SHARED, SAM)):
        await push_sessions(
            service, {"source_ip": ip, "user": {"email": email}, "ttl_seconds": 3600}
        )
    assert await send(service, phase_one(now)) is grpc.StatusCode.OK
    await sink.wait_for_spans(5)
    sink.failures = [grpc.StatusCode.INVALID_ARGUMENT]
    assert await send(service, batch(100, 14)) is grpc.StatusCode.OK
    await wait_until(lambda: service.metrics.spans_dropped.value(("INVALID_ARGUMENT",)) == 14)
    sink.gate = asyncio.Event()
    statuses = [await send(service, batch(200 + n, 1)) for n in range(3)]
    assert statuses == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    sink.gate.set()
    await sink.wait_for_spans(SPANS_EXPORTED)
    await wait_until(lambda: len(service.queue) == 0)


def fill(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in: every window is the run's."""
    for variable in ("$__rate_interval", "$__range", "$__interval"):
        expr = expr.replace(variable, f"{int(RUN)}s")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)  # the usage variables are regex matchers


def panels() -> Iterator[dict[str, Any]]:
    """Every dashboard panel with queries."""
    dashboard = json.loads((GRAFANA / "user-enricher-dashboard.json").read_text())
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        if panel.get("targets"):
            yield panel


def as_result(vector: list[dict[str, Any]], drop: frozenset[str]) -> Result:
    """A Prometheus result vector keyed by labels, without the target's own labels."""
    return {
        frozenset((k, v) for k, v in s["metric"].items() if k not in drop): float(s["value"][1])
        for s in vector
    }


def assert_matches(what: str, got: Result, expected: Result) -> None:
    """Same series, values equal up to floating-point rounding."""
    assert set(got) == set(expected), f"{what}: series {sorted(got)} != {sorted(expected)}"
    for key, value in expected.items():
        assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-12), (
            f"{what} {sorted(key)}: {got[key]} != {value}"
        )


async def test_dashboard_and_alerts_on_real_prometheus(
    sink: TraceSink, clock: Clock, prometheus_for: Any
) -> None:
    """Every panel and alert gives the value the traffic script implies, first cases included."""
    config = service_config(
        sink.endpoint,
        queue={"size": 2, "merge_bytes": 0},
        api={"endpoint": "127.0.0.1:0", "token": TOKEN, "rate_limit": {"requests_per_second": 0}},
    )
    service = Service(config, clock_ns=clock)
    await service.start()
    try:
        assert service.addresses.http is not None
        prometheus = await prometheus_for(service.addresses.http)
        up = 'up{job="user-enricher"}'
        await until(partial(_equals, prometheus, up, 1.0))  # a first scrape before any traffic
        await play(service, sink, clock.now_ns)
        cost = f'user_enricher_llm_cost_usd_total{{user="{MIKE}"}}'
        for expr, value in (
            (cost, 0.25),  # a series born during the run shows its value from its 2nd scrape
            ("user_enricher_spans_exported_total", SPANS_EXPORTED),
            ('user_enricher_spans_dropped_total{code="INVALID_ARGUMENT"}', 14),
            ("user_enricher_export_latency_seconds_count", service.metrics.export_latency.count),
        ):
            await until(partial(_equals, prometheus, expr, float(value)))
        await until(partial(_firing, prometheus, "UserEnricherSpansDropped"))
        at = float((await prometheus.query(f"timestamp({up})"))[0]["value"][1])
        await check_panels(prometheus, at)
        await check_alerts(prometheus, at)
        assert await prometheus.value("process_resident_memory_bytes") is not None
        assert not await prometheus.query('{__name__=~".+_created"}')
    finally:
        await service.shutdown(grace_s=1.0)


async def check_panels(prometheus: Prometheus, at: float) -> None:
    """Each panel's targets against PANELS."""
    seen = set()
    for panel in panels():
        title = panel["title"]
        seen.add(title)
        expected = PANELS[title]
        assert len(expected) == len(panel["targets"]), title
        for target, want in zip(panel["targets"], expected, strict=True):
            vector = await prometheus.query(fill(target["expr"]), at)
            if want is None:  # a quantile of real latencies: finite and positive
                assert vector and all(0 < float(s["value"][1]) < math.inf for s in vector), title
            elif isinstance(want, Each):
                assert [float(s["value"][1]) for s in vector] == [want.value], title
            else:
                assert_matches(title, as_result(vector, frozenset({"job", "instance"})), want)
    assert seen == set(PANELS)


async def check_alerts(prometheus: Prometheus, at: float) -> None:
    """Each alert expression against ALERTS; the ones with ``for: 0m`` fire at once."""
    rules = yaml.safe_load((GRAFANA / "alerts.yml").read_text())["groups"][0]["rules"]
    assert {rule["alert"] for rule in rules} == set(ALERTS)
    for rule in rules:
        vector = await prometheus.query(rule["expr"], at)
        got = as_result(vector, frozenset({"job", "instance", "__name__"}))
        assert_matches(rule["alert"], got, ALERTS[rule["alert"]])


async def _equals(prometheus: Prometheus, expr: str, value: float) -> bool:
    return await prometheus.value(expr) == value


async def _firing(prometheus: Prometheus, alert: str) -> bool:
    return alert in await prometheus.firing()


async def test_prometheus_scrapes_a_token_protected_telemetry_listener(
    sink: TraceSink, tmp_path: Path, prometheus_for: Any
) -> None:
    """With telemetry.token, Prometheus with ``credentials_file`` scrapes; without it, 401."""
    secret = "scrape-token-0123456789"
    (tmp_path / "metrics-token").write_text(secret + "\n")
    config = service_config(sink.endpoint, telemetry={"endpoint": "127.0.0.1:0", "token": secret})
    service = Service(config)
    await service.start()
    try:
        target = service.addresses.telemetry
        assert target is not None
        jobs = [
            {
                "job_name": "with-token",
                "authorization": {"credentials_file": str(tmp_path / "metrics-token")},
                "static_configs": [{"targets": [target]}],
            },
            {"job_name": "without-token", "static_configs": [{"targets": [target]}]},
            {"job_name": "api-port", "static_configs": [{"targets": [service.addresses.http]}]},
        ]
        prometheus = await prometheus_for(target, jobs)
        for job, value in (("with-token", 1.0), ("without-token", 0.0), ("api-port", 0.0)):
            await until(partial(_equals, prometheus, f'up{{job="{job}"}}', value))
        received = 'user_enricher_spans_received_total{job="with-token"}'
        assert await prometheus.value(received) == 0.0
    finally:
        await service.shutdown(grace_s=1.0)
