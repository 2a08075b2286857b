"""``user-enricher report`` against a fake Jaeger that serves API v3 and the legacy API."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from conftest import free_port

from processor.cli import main
from processor.tools.report.aggregate import Filters, aggregate
from processor.tools.report.progress import Progress
from processor.tools.report.render import CSV_COLUMNS
from processor.tools.report.spans import SpanRecord, parse_v3
from processor.tools.report.timerange import RangeError, TimeRange, parse_duration, to_us

BASE_US = to_us(datetime(2026, 3, 1, tzinfo=UTC))
HOUR_US = 3_600_000_000
RANGE = ["--start", "2026-03-01T00:00:00Z", "--end", "2026-03-01T06:00:00Z"]
MIKE = "mike.chen@example.com"
ANA = "ana.lima@example.com"
HASHED = "9f86d081884c7d659a2feaa0c55ad015"
NOT_FOUND_V3 = {"error": {"httpCode": 404, "message": "No traces found"}}


# --------------------------------------------------------------------------- fixture data


@dataclass(frozen=True)
class FakeSpan:
    """A span as the fake Jaeger stores it."""

    trace_id: str
    span_id: str
    service: str
    start_us: int
    attributes: dict[str, Any]


def at(hours: int, minutes: int = 0, seconds: int = 0) -> int:
    """Microseconds at 2026-03-01 ``hours:minutes:seconds`` UTC."""
    return BASE_US + hours * HOUR_US + (minutes * 60 + seconds) * 1_000_000


def user_attributes(
    email: str = "",
    *,
    id_: str = "",
    hash_: str = "",
    team: str = "",
    method: str = "",
    confidence: str = "",
) -> dict[str, Any]:
    """The user.* attributes the enricher writes (empty values left out)."""
    pairs = {
        "user.email": email,
        "user.id": id_,
        "user.hash": hash_,
        "user.team": team,
        "user.attribution.method": method,
        "user.attribution.confidence": confidence,
    }
    return {key: value for key, value in pairs.items() if value}


def llm_attributes(
    provider: str,
    model: str,
    tokens_in: int,
    tokens_out: int,
    cost: float | None,
    status: int = 200,
) -> dict[str, Any]:
    """AgentGateway's attributes of one LLM call."""
    attributes: dict[str, Any] = {
        "protocol": "llm",
        "http.method": "POST",
        "http.status": status,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": tokens_in,
        "gen_ai.usage.output_tokens": tokens_out,
    }
    if cost is not None:
        attributes["agw.ai.usage.cost.total"] = cost
    return attributes


def _ids(n: int) -> tuple[str, str]:
    """Trace and span ids of call ``n``, with leading zeros (the legacy API drops them)."""
    return f"{n:032x}" if n % 2 else f"{0xABC:016x}{n:016x}", f"{n:016x}"


def fixture_spans() -> list[FakeSpan]:
    """Three users and two unattributed calls over six hours, plus spans that must not count."""
    mike = user_attributes(MIKE, id_="u-mike", team="platform", method="session", confidence="high")
    ana = user_attributes(ANA, id_="u-ana", team="research", method="trace", confidence="exact")
    hashed = user_attributes(hash_=HASHED, team="platform", method="directory", confidence="exact")
    ambiguous = user_attributes(method="session", confidence="ambiguous")
    calls: list[tuple[int, dict[str, Any], dict[str, Any]]] = [
        (at(0, 10), mike, llm_attributes("openai", "gpt-4o", 100, 50, 0.0015)),
        (at(1, 20), mike, llm_attributes("openai", "gpt-4o", 200, 100, 0.003)),
        (at(3, 5), mike, llm_attributes("anthropic", "claude-sonnet-4-5", 300, 120, 0.0027)),
        (at(4, 40), mike, llm_attributes("openai", "gpt-4o", 50, 0, None, status=429)),
        (at(0, 30), ana, llm_attributes("anthropic", "claude-sonnet-4-5", 1000, 500, 0.0105)),
        (at(2, 15), ana, llm_attributes("gcp.gemini", "gemini-2.5-pro", 400, 200, None)),
        (at(5, 50), ana, llm_attributes("anthropic", "claude-sonnet-4-5", 10, 0, 0.0, status=500)),
        (at(1, 45), hashed, llm_attributes("openai", "gpt-4o-mini", 80, 40, 0.00006)),
        (at(2, 50), ambiguous, llm_attributes("openai", "gpt-4o", 30, 8, 0.0002)),
        (at(3, 30), {}, llm_attributes("aws.bedrock", "claude-sonnet-4-5", 990, 410, None)),
        (at(5, 55), mike, llm_attributes("openai", "gpt-4o", 20, 10, 0.0004)),
    ]
    spans = []
    for n, (start, user, llm) in enumerate(calls, start=1):
        trace_id, span_id = _ids(n)
        spans.append(FakeSpan(trace_id, span_id, "agentgateway", start, {**llm, **user}))
    first_trace, second_trace, last_trace = spans[0].trace_id, spans[1].trace_id, spans[-1].trace_id
    spans += [
        # Open WebUI's own span in the first call's trace: another service.
        FakeSpan(first_trace, "f" * 16, "open-webui", at(0, 9, 59), {"client.user.email": MIKE}),
        # A second gateway in the same trace as the second call: another service.
        FakeSpan(
            second_trace,
            "e" * 16,
            "agentgateway-staging",
            at(1, 20, 1),
            {**llm_attributes("openai", "gpt-4o", 7, 7, 7.0), **mike},
        ),
        # The same trace as the last call, but starting after the range.
        FakeSpan(
            last_trace,
            "d" * 16,
            "agentgateway",
            at(6, 10),
            {**llm_attributes("openai", "gpt-4o", 5, 5, 1.0), **mike},
        ),
        # A gateway span that is not an LLM call (MCP).
        FakeSpan(_ids(90)[0], "c" * 16, "agentgateway", at(2), {"protocol": "mcp", **mike}),
        # An LLM call the day before.
        FakeSpan(
            _ids(91)[0],
            "b" * 16,
            "agentgateway",
            at(-20),
            {**llm_attributes("openai", "gpt-4o", 9, 9, 9.0), **ana},
        ),
    ]
    return spans


# --------------------------------------------------------------------------- fake Jaeger


@dataclass
class FakeJaeger:
    """Jaeger's query service in a thread: both APIs over one list of spans.

    It finds traces with a span of the service in the time range whose attributes
    hold every filter value, returns at most ``limit`` of them (newest first), and
    each returned trace whole, other services' spans included, as Jaeger does.
    """

    spans: list[FakeSpan]
    v3: bool = True
    stream: bool = False  # API v3 answers as newline-delimited chunks, one per trace
    fail_status: int | None = None
    garbage: bool = False
    ui_fallback: bool = False  # unknown paths get the UI's index.html with 200, as Jaeger v1
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    def start(self) -> None:
        """Serve on an ephemeral port of 127.0.0.1 from a thread with its own loop."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        """Stop serving and end the thread."""
        assert self._loop is not None and self._thread is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [path for path, _ in self.requests]

    async def _serve(self) -> int:
        app = web.Application(middlewares=[self._log])
        app.router.add_get("/api/traces", self._legacy_traces)
        if self.v3:
            app.router.add_get("/api/v3/services", self._v3_services)
            app.router.add_get("/api/v3/traces", self._v3_traces)
        if self.ui_fallback:
            app.router.add_get("/{tail:.*}", self._index_html)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port: int = self._runner.addresses[0][1]
        return port

    def _find(
        self, service: str, min_us: int, max_us: int, wanted: dict[str, str], limit: int
    ) -> list[list[FakeSpan]]:
        """Whole traces with a matching span, newest match first, at most ``limit``."""
        newest: dict[str, int] = {}
        for span in self.spans:
            if (
                span.service == service
                and min_us <= span.start_us <= max_us
                and all(str(span.attributes.get(k)) == v for k, v in wanted.items())
            ):
                newest[span.trace_id] = max(newest.get(span.trace_id, 0), span.start_us)
        chosen = sorted(newest, key=lambda trace_id: -newest[trace_id])[:limit]
        return [[s for s in self.spans if s.trace_id == trace_id] for trace_id in chosen]

    @web.middleware
    async def _log(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Record every request, to routes that exist or not."""
        self.requests.append((request.path, dict(request.query)))
        return await handler(request)

    def _failure(self, request: web.Request) -> web.Response | None:
        if self.garbage:
            return web.Response(text="<html>not json", content_type="text/html")
        if self.fail_status is None:
            return None
        body: dict[str, Any]
        if request.path.startswith("/api/v3"):
            body = {"error": {"httpCode": self.fail_status, "message": "storage unavailable"}}
        else:
            body = {
                "data": None,
                "errors": [{"code": self.fail_status, "msg": "storage unavailable"}],
            }
        return web.Response(status=self.fail_status, text=json.dumps(body))

    async def _index_html(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>Jaeger UI</title>", content_type="text/html"
        )

    async def _v3_services(self, request: web.Request) -> web.Response:
        return web.json_response({"services": sorted({s.service for s in self.spans})})

    async def _v3_traces(self, request: web.Request) -> web.Response:
        failed = self._failure(request)
        if failed is not None:
            return failed
        q = request.query
        traces = self._find(
            q["query.service_name"],
            to_us(datetime.fromisoformat(q["query.start_time_min"])),
            to_us(datetime.fromisoformat(q["query.start_time_max"])),
            json.loads(q.get("query.attributes", "{}")),
            int(q["query.num_traces"]),
        )
        if not traces:  # Jaeger writes its JSON error with http.Error, as text/plain
            return web.Response(status=404, text=json.dumps(NOT_FOUND_V3) + "\n")
        chunks = [{"result": _otlp(trace)} for trace in traces]
        if self.stream:
            return web.Response(text="\n".join(json.dumps(chunk) for chunk in chunks) + "\n")
        return web.json_response({"result": _otlp([s for trace in traces for s in trace])})

    async def _legacy_traces(self, request: web.Request) -> web.Response:
        failed = self._failure(request)
        if failed is not None:
            return failed
        q = request.query
        traces = self._find(
            q["service"],
            int(q["start"]),
            int(q["end"]),
            json.loads(q.get("tags", "{}")),
            int(q["limit"]),
        )
        data = [_legacy_trace(trace) for trace in traces]
        return web.json_response({"data": data, "total": 0, "limit": 0, "offset": 0})


def _otlp(spans: list[FakeSpan]) -> dict[str, Any]:
    """OTLP/JSON ``TracesData`` of ``spans``, one resource per service."""
    services = sorted({span.service for span in spans})
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_kv("service.name", service)]},
                "scopeSpans": [
                    {
                        "scope": {"name": "agentgateway"},
                        "spans": [_otlp_span(s) for s in spans if s.service == service],
                    }
                ],
            }
            for service in services
        ]
    }


def _otlp_span(span: FakeSpan) -> dict[str, Any]:
    return {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": "POST /*",
        "kind": 2,
        "startTimeUnixNano": str(span.start_us * 1000),
        "endTimeUnixNano": str(span.start_us * 1000 + 1_500_000_000),
        "attributes": [_kv(key, value) for key, value in span.attributes.items()],
        "status": {},
    }


def _kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": value}}


def _legacy_trace(spans: list[FakeSpan]) -> dict[str, Any]:
    """Jaeger's legacy JSON of one trace (leading zeros of the trace id dropped)."""
    processes = {f"p{i}": s for i, s in enumerate(sorted({span.service for span in spans}), 1)}
    process_of = {service: pid for pid, service in processes.items()}
    trace_id = spans[0].trace_id.lstrip("0")
    return {
        "traceID": trace_id,
        "spans": [
            {
                "traceID": trace_id,
                "spanID": span.span_id,
                "operationName": "POST /*",
                "references": [],
                "startTime": span.start_us,
                "duration": 1_500_000,
                "tags": [_tag(key, value) for key, value in span.attributes.items()],
                "logs": [],
                "processID": process_of[span.service],
            }
            for span in spans
        ],
        "processes": {pid: {"serviceName": name, "tags": []} for pid, name in processes.items()},
    }


def _tag(key: str, value: Any) -> dict[str, Any]:
    kind = {bool: "bool", int: "int64", float: "float64"}.get(type(value), "string")
    return {"key": key, "type": kind, "value": value}


@pytest.fixture
def jaeger() -> Iterator[FakeJaeger]:
    """A fake Jaeger with API v3, serving the fixture spans."""
    with _running(FakeJaeger(fixture_spans())) as fake:
        yield fake


class _running:
    """Start a FakeJaeger for the block, stop it after."""

    def __init__(self, fake: FakeJaeger) -> None:
        self.fake = fake

    def __enter__(self) -> FakeJaeger:
        self.fake.start()
        return self.fake

    def __exit__(self, *exc: object) -> None:
        self.fake.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``user-enricher report ARGV``: exit code, stdout, stderr."""
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> dict[str, list[str]]:
    """The table's rows by user (and TOTAL), cells split on runs of two spaces or more."""
    rows: dict[str, list[str]] = {}
    for line in out.splitlines()[2:]:
        cells = re.split(r" {2,}", line.strip())
        if len(cells) >= 6 and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells
    return rows


# --------------------------------------------------------------------------- output


@pytest.mark.parametrize("variant", ["v3", "v3-stream", "legacy-fallback", "legacy-forced"])
def test_table_totals(capsys: pytest.CaptureFixture[str], variant: str) -> None:
    """Every API shape gives the same table: exact per-user sums, a TOTAL row, coverage."""
    fake = FakeJaeger(
        fixture_spans(), v3=variant != "legacy-fallback", stream=variant == "v3-stream"
    )
    api = ["--api", "legacy"] if variant == "legacy-forced" else []
    with _running(fake):
        code, out, err = run(capsys, "--jaeger", fake.url, *RANGE, *api)
    assert code == 0, err
    rows = table_rows(out)
    assert list(rows) == [ANA, MIKE, "unknown", HASHED, "TOTAL"]  # by cost, descending
    assert rows["TOTAL"][:6] == ["TOTAL", "11", "3,180", "1,438", "0.0184", "2"]
    assert rows[MIKE] == [
        MIKE,
        "5",
        "670",
        "280",
        "0.0076",
        "1",
        "gpt-4o (4), claude-sonnet-4-5 (1)",
        "openai, anthropic",
        "2026-03-01 05:55:00",
    ]
    assert rows[ANA][:6] == [ANA, "3", "1,410", "700", "0.0105", "1"]
    assert rows["unknown"][:6] == ["unknown", "2", "1,020", "418", "0.0002", "0"]
    assert rows[HASHED][:6] == [HASHED, "1", "80", "40", "0.0001", "0"]
    assert (
        "attribution: 9 of 11 requests (81.8%) have a user: session 5, trace 3, directory 1; "
        "2 without (1 ambiguous)"
    ) in out
    assert "note: 3 requests have no cost" in out
    expected_api = "v3" if variant.startswith("v3") else "legacy"
    assert f"(API {expected_api})" in out.splitlines()[0]


@pytest.mark.parametrize("ui_fallback", [False, True])
def test_fallback_probes_v3_then_uses_the_legacy_api(
    capsys: pytest.CaptureFixture[str], ui_fallback: bool
) -> None:
    """Without API v3 (404, or the UI's HTML page) the report queries /api/traces only."""
    with _running(FakeJaeger(fixture_spans(), v3=False, ui_fallback=ui_fallback)) as fake:
        code, out, err = run(capsys, "--jaeger", fake.url, *RANGE)
    assert code == 0, err
    assert "/api/v3/traces" not in fake.paths()
    assert fake.paths()[0] == "/api/v3/services"
    assert set(fake.paths()[1:]) == {"/api/traces"}
    assert table_rows(out)["TOTAL"][1] == "11"


def test_no_traces_in_a_window_is_not_a_missing_route(capsys: pytest.CaptureFixture[str]) -> None:
    """API v3's 404 "No traces found" for empty windows still yields a report from v3."""
    with _running(FakeJaeger(fixture_spans())) as fake:
        code, out, err = run(capsys, "--jaeger", fake.url, *RANGE, "--window", "10m")
    assert code == 0, err
    assert table_rows(out)["TOTAL"][1] == "11"
    assert "/api/traces" not in fake.paths()


def test_json_shape(jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str]) -> None:
    """--format json: the query, a list of user objects, totals and attribution coverage."""
    code, out, err = run(capsys, "--jaeger", jaeger.url, *RANGE, "--format", "json")
    assert code == 0, err
    document = json.loads(out)
    assert document["range"] == {"start": "2026-03-01T00:00:00Z", "end": "2026-03-01T06:00:00Z"}
    assert document["api"] == "v3" and document["service"] == "agentgateway"
    assert [user["user"] for user in document["users"]] == [ANA, MIKE, "unknown", HASHED]
    mike = document["users"][1]
    assert mike == {
        "user": MIKE,
        "requests": 5,
        "input_tokens": 670,
        "output_tokens": 280,
        "cost_usd": 0.0076,
        "errors": 1,
        "top_models": [
            {"model": "gpt-4o", "requests": 4},
            {"model": "claude-sonnet-4-5", "requests": 1},
        ],
        "providers": [
            {"provider": "openai", "requests": 4},
            {"provider": "anthropic", "requests": 1},
        ],
        "last_seen": "2026-03-01T05:55:00Z",
    }
    totals = document["totals"]
    assert (totals["requests"], totals["input_tokens"], totals["output_tokens"]) == (11, 3180, 1438)
    assert totals["cost_usd"] == pytest.approx(0.01836)
    assert totals["errors"] == 2 and "user" not in totals
    assert document["attribution"] == {
        "requests": 11,
        "with_user": 9,
        "share": 0.8182,
        "by_method": {"session": 5, "trace": 3, "directory": 1},
        "ambiguous": 1,
    }
    assert document["unpriced"]["requests"] == 3


def test_csv_shape(jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str]) -> None:
    """--format csv: a header row, then one row per user and nothing else."""
    code, out, err = run(capsys, "--jaeger", jaeger.url, *RANGE, "--format", "csv")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row[0] for row in rows[1:]] == [ANA, MIKE, "unknown", HASHED]
    by_user = {row[0]: dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]}
    assert by_user[MIKE]["requests"] == "5" and by_user[MIKE]["cost_usd"] == "0.007600"
    assert by_user[MIKE]["top_models"] == "gpt-4o (4), claude-sonnet-4-5 (1)"
    assert by_user[MIKE]["last_seen"] == "2026-03-01T05:55:00Z"
    assert sum(int(row[1]) for row in rows[1:]) == 11


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("argv", "users", "requests"),
    [
        (["--user", MIKE], [MIKE], "5"),
        (["--user", "u-ana"], [ANA], "3"),
        (["--user", HASHED], [HASHED], "1"),
        (["--team", "platform"], [MIKE, HASHED], "6"),
        (["--team", "platform", "--user", MIKE], [MIKE], "5"),
    ],
)
def test_user_and_team_filters(
    jaeger: FakeJaeger,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    users: list[str],
    requests: str,
) -> None:
    """--user (email, id or hash) and --team keep only the matching users' requests."""
    code, out, err = run(capsys, "--jaeger", jaeger.url, *RANGE, *argv)
    assert code == 0, err
    rows = table_rows(out)
    assert list(rows) == [*users, "TOTAL"]
    assert rows["TOTAL"][1] == requests


def test_filters_reach_jaeger(jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str]) -> None:
    """The user and team filters are sent to Jaeger as exact attribute values."""
    code, _, err = run(capsys, "--jaeger", jaeger.url, *RANGE, "--user", MIKE, "--team", "platform")
    assert code == 0, err
    sent = [q for path, q in jaeger.requests if path == "/api/v3/traces"]
    assert sent and all(
        json.loads(q["query.attributes"]) == {"user.email": MIKE, "user.team": "platform"}
        for q in sent
    )


def test_no_match_prints_an_empty_report(
    jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str]
) -> None:
    """A filter nobody matches exits 0 and says there were no requests."""
    code, out, _ = run(capsys, "--jaeger", jaeger.url, *RANGE, "--team", "nobody")
    assert code == 0
    assert "no LLM requests of service agentgateway in this range" in out


# --------------------------------------------------------------------------- paging


def paging_spans(traces: int) -> list[FakeSpan]:
    """``traces`` traces in the first hour, each with two gateway calls 20 s apart."""
    user = user_attributes(MIKE, id_="u-mike", method="session", confidence="high")
    spans = []
    step_us = HOUR_US // (traces + 1)
    for n in range(traces):
        trace_id = f"{n + 1:032x}"
        for k in range(2):
            start = BASE_US + n * step_us + k * 20_000_000
            llm = llm_attributes("openai", "gpt-4o", 10 + n, 1, 0.001)
            spans.append(
                FakeSpan(trace_id, f"{2 * n + k + 1:016x}", "agentgateway", start, {**llm, **user})
            )
    return spans


@pytest.mark.parametrize("v3", [True, False])
def test_pagination_counts_every_span_once(capsys: pytest.CaptureFixture[str], v3: bool) -> None:
    """More traces than a page holds: windows are split until pages fit, no span twice."""
    spans = paging_spans(150)
    with _running(FakeJaeger(spans, v3=v3)) as fake:
        code, out, err = run(
            capsys,
            "--jaeger",
            fake.url,
            "--start",
            "2026-03-01T00:00:00Z",
            "--end",
            "2026-03-01T01:00:00Z",
            "--limit",
            "25",
            "--format",
            "json",
        )
    assert code == 0, err
    totals = json.loads(out)["totals"]
    assert totals["requests"] == 300
    assert totals["input_tokens"] == sum(s.attributes["gen_ai.usage.input_tokens"] for s in spans)
    assert totals["cost_usd"] == pytest.approx(0.3)
    trace_path = "/api/v3/traces" if v3 else "/api/traces"
    assert fake.paths().count(trace_path) > 6  # 150 traces / 25 per page, and full pages re-asked
    assert "warning" not in err


def test_saturated_windows_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """When one second still holds more traces than --limit, a warning says spans may be missing."""
    spans = [
        FakeSpan(
            f"{n + 1:032x}",
            f"{n + 1:016x}",
            "agentgateway",
            BASE_US + n,
            llm_attributes("openai", "gpt-4o", 1, 1, None),
        )
        for n in range(5)
    ]
    with _running(FakeJaeger(spans)) as fake:
        code, _, err = run(capsys, "--jaeger", fake.url, *RANGE, "--limit", "2")
    assert code == 0
    assert "warning: 1 window(s) of 1 s still returned --limit 2 traces" in err


def test_progress_lines_off_a_terminal(
    jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal, progress is a line per tenth of the windows, ending with all of them."""
    code, _, err = run(capsys, "--jaeger", jaeger.url, *RANGE, "--window", "15m")
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("fetched")]
    assert 2 <= len(lines) <= 11
    assert "\r" not in err
    assert re.fullmatch(r"fetched 24/24 windows, \d+ spans", lines[-1])
    done = [int(re.match(r"fetched (\d+)/", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert done == sorted(done)


def test_progress_redraws_one_line_on_a_terminal() -> None:
    """On a terminal, each update redraws the line with a carriage return; close ends it."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(stream)
    for done in range(1, 4):
        progress.update(done, 3, 1000 * done)
    progress.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "fetched 3/3 windows, 3,000 spans" in text


def test_since_counts_back_from_now(capsys: pytest.CaptureFixture[str]) -> None:
    """--since 2h covers the last two hours only."""
    now_us = time.time_ns() // 1000
    spans = [
        FakeSpan(
            f"{n:032x}",
            f"{n:016x}",
            "agentgateway",
            now_us - minutes * 60_000_000,
            llm_attributes("openai", "gpt-4o", 1, 1, 0.5),
        )
        for n, minutes in enumerate((30, 90, 150, 600), start=1)
    ]
    with _running(FakeJaeger(spans)) as fake:
        code, out, err = run(capsys, "--jaeger", fake.url, "--since", "2h", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["totals"]["requests"] == 2


def test_jaeger_url_from_the_environment(
    jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --jaeger, USER_ENRICHER_JAEGER_URL names the Jaeger to ask."""
    monkeypatch.setenv("USER_ENRICHER_JAEGER_URL", jaeger.url + "/")
    code, out, err = run(capsys, *RANGE)
    assert code == 0, err
    assert f"in Jaeger {jaeger.url} (API v3)" in out


# --------------------------------------------------------------------------- prices


def test_price_file_prices_what_the_gateway_did_not(
    jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--prices costs the unpriced calls; calls the gateway priced (even at 0) keep their cost."""
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "usage:\n  prices:\n"
        "    Gemini-2.5-Pro: {input_per_million: 1.25, output_per_million: 10}\n"
        "    claude-sonnet-4-5: {input_per_million: 3, output_per_million: 15}\n"
    )
    code, out, err = run(
        capsys, "--jaeger", jaeger.url, *RANGE, "--prices", str(prices), "--format", "json"
    )
    assert code == 0, err
    document = json.loads(out)
    cost = {user["user"]: user["cost_usd"] for user in document["users"]}
    assert cost[ANA] == pytest.approx(0.0105 + 0.0025)  # gemini: 400 x 1.25 + 200 x 10 per M
    assert cost["unknown"] == pytest.approx(0.0002 + 0.00912)  # bedrock claude: 990 x 3 + 410 x 15
    assert cost[MIKE] == pytest.approx(0.0076)  # its gpt-4o call stays unpriced
    assert document["totals"]["cost_usd"] == pytest.approx(0.02998)
    assert document["unpriced"] == {"requests": 1, "models": ["gpt-4o"]}
    assert [user["user"] for user in document["users"]] == [ANA, "unknown", MIKE, HASHED]


def test_bad_price_file(
    jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A price file with a bad entry exits 2 with one line naming it."""
    prices = tmp_path / "prices.yaml"
    prices.write_text("gpt-4o: {input_per_million: -1, output_per_million: 10}\n")
    code, out, err = run(capsys, "--jaeger", jaeger.url, *RANGE, "--prices", str(prices))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "gpt-4o.input_per_million" in err


# --------------------------------------------------------------------------- errors


def test_unreachable_jaeger(capsys: pytest.CaptureFixture[str]) -> None:
    """A closed port exits 2 with one line: cannot reach Jaeger ... connection refused."""
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = run(capsys, "--jaeger", url, *RANGE)
    assert code == 2 and out == ""
    assert err == f"error: cannot reach Jaeger at {url}: connection refused\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "2026-03-02", "--end", "2026-03-01"], "--end must be after --start"),
        (
            ["--start", "2026-03-01T05:00:00Z", "--end", "2026-03-01T05:00:00Z"],
            "--end must be after --start",
        ),
        (["--start", "yesterday"], "cannot parse --start 'yesterday'"),
        (["--end", "2026-13-01"], "cannot parse --end '2026-13-01'"),
        (["--since", "2h", "--start", "2026-03-01"], "--since cannot be combined with --start"),
        (["--since", "two days"], "cannot parse duration 'two days'"),
        (["--since", "0h"], "must be longer than zero"),
    ],
)
def test_bad_range(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    """An unusable range exits 2 with one line, before any request."""
    code, out, err = run(capsys, "--jaeger", f"http://127.0.0.1:{free_port()}", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


@pytest.mark.parametrize("v3", [True, False])
def test_jaeger_answering_500(capsys: pytest.CaptureFixture[str], v3: bool) -> None:
    """An HTTP error from Jaeger exits 2 with one line giving the status and its message."""
    with _running(FakeJaeger(fixture_spans(), v3=v3, fail_status=500)) as fake:
        code, out, err = run(capsys, "--jaeger", fake.url, *RANGE)
    path = "/api/v3/traces" if v3 else "/api/traces"
    assert code == 2 and out == ""
    assert (
        err == f"error: Jaeger at {fake.url} answered HTTP 500 to GET {path}: storage unavailable\n"
    )


def test_invalid_json_from_jaeger(capsys: pytest.CaptureFixture[str]) -> None:
    """A body that is not JSON exits 2 with one line saying so."""
    with _running(FakeJaeger(fixture_spans(), garbage=True)) as fake:
        code, _, err = run(capsys, "--jaeger", fake.url, *RANGE)
    assert code == 2
    assert err.startswith(f"error: invalid JSON from Jaeger at {fake.url} (GET /api/v3/traces): ")
    assert err.count("\n") == 1


def test_forced_v3_without_v3(capsys: pytest.CaptureFixture[str]) -> None:
    """--api v3 against a Jaeger without API v3 exits 2 and suggests --api legacy."""
    with _running(FakeJaeger(fixture_spans(), v3=False)) as fake:
        code, _, err = run(capsys, "--jaeger", fake.url, *RANGE, "--api", "v3")
    assert code == 2
    assert "has no API v3" in err and "--api legacy" in err


def test_unknown_service_warns(jaeger: FakeJaeger, capsys: pytest.CaptureFixture[str]) -> None:
    """A service Jaeger does not know gives a warning listing the known ones, and no rows."""
    code, out, err = run(capsys, "--jaeger", jaeger.url, *RANGE, "--service", "agw")
    assert code == 0
    assert "warning: Jaeger has no service 'agw' (it has: agentgateway," in err
    assert "no LLM requests" in out


# --------------------------------------------------------------------------- pure parts


def test_durations_and_windows() -> None:
    """Durations combine units; a range splits into windows and halves without gaps."""
    assert parse_duration("1h30m") == 90 * 60_000_000
    assert parse_duration("7d") == 7 * 24 * HOUR_US
    with pytest.raises(RangeError):
        parse_duration("24")
    windows = TimeRange(0, 5 * HOUR_US // 2).split(HOUR_US)
    assert [(w.start_us, w.end_us) for w in windows] == [
        (0, HOUR_US),
        (HOUR_US, 2 * HOUR_US),
        (2 * HOUR_US, 5 * HOUR_US // 2),
    ]
    first, second = TimeRange(0, 3).halves()
    assert (first.end_us, second.start_us, second.end_us) == (1, 1, 3)


def test_v3_stream_chunks_and_errors() -> None:
    """Concatenated v3 chunks are all read; an error chunk is an error, not an empty page."""
    spans = fixture_spans()
    chunks = "\n".join(json.dumps({"result": _otlp([span])}) for span in spans[:3])
    page = parse_v3(chunks.encode())
    assert [span.span_id for span in page.spans] == [span.span_id for span in spans[:3]]
    assert page.traces == 3
    with pytest.raises(ValueError, match="No traces found"):
        parse_v3(json.dumps(NOT_FOUND_V3).encode())


def test_v3_from_older_releases() -> None:
    """Base64 ids and ``instrumentationLibrarySpans`` (older Jaeger releases) are read too."""
    span = fixture_spans()[0]
    resource = _otlp([span])["resourceSpans"][0]
    resource["instrumentationLibrarySpans"] = resource.pop("scopeSpans")
    otlp_span = resource["instrumentationLibrarySpans"][0]["spans"][0]
    otlp_span["traceId"] = base64.b64encode(bytes.fromhex(span.trace_id)).decode()
    otlp_span["spanId"] = base64.b64encode(bytes.fromhex(span.span_id)).decode()
    page = parse_v3(json.dumps({"result": {"resourceSpans": [resource]}}).encode())
    assert [(s.trace_id, s.span_id) for s in page.spans] == [(span.trace_id, span.span_id)]
    assert page.spans[0].attributes["user.email"] == MIKE


def test_aggregate_is_pure_and_exact() -> None:
    """Aggregation alone: duplicates are the caller's job, filters and range are applied."""
    records = [
        SpanRecord(s.trace_id, s.span_id, s.service, s.start_us, s.attributes)
        for s in fixture_spans()
    ]
    report = aggregate(
        records,
        service="agentgateway",
        time_range=TimeRange(at(0), at(6)),
        filters=Filters(team="research"),
    )
    assert [row.user for row in report.rows] == [ANA]
    assert (report.totals.requests, report.totals.errors) == (3, 1)
    assert report.coverage.by_method == (("trace", 3),)
