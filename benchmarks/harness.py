"""End-to-end benchmark over real gRPC sockets: the service against a bare pass-through.

Every party is its own OS process, so CPU time and memory are attributable:

- ``benchmarks.bench_sink``: the downstream (Jaeger's place); acknowledges without decoding;
- ``benchmarks.passthrough``: decode + re-encode + forward, answering after the forward;
- ``python -m processor serve``: the service, with sessions pushed over its HTTP API;
- ``benchmarks.loadgen``: sends the same pre-encoded AgentGateway batch, measures.

Prints a progress line per step on stderr, then Markdown tables on stdout and a
PASS/MISS line per target (a MISS does not fail the run).

Usage: python -m benchmarks.harness [--quick] [--profile FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from benchmarks.workload import ADDRESSES
from processor.app.config import parse_config

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-api-token-0123456789"
PUSH_BATCH = 1000  # the session API's limit per push
PUSH_CLIENTS = 4
_NS = 1_000_000_000
_MB = 1 << 20

# Published OpenTelemetry Collector figures quoted next to ours.
COLLECTOR_FULL_PIPELINE = "~10,000-12,000 per CPU"
COLLECTOR_K8SATTRIBUTES = "~50,000"

# Targets.
RATIO_TARGET = 0.75
ABSOLUTE_TARGET = 150_000.0
ADDED_P99_TARGET_MS = 5.0
FLAT_TOLERANCE = 0.85  # slowest size >= this share of the fastest
RSS_TARGET_MB = 400.0


@dataclass(frozen=True, slots=True)
class Plan:
    """Durations and sweep sizes of one run."""

    warmup: float
    duration: float
    sweep_warmup: float
    sweep_duration: float
    session_sizes: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    events: int
    load_budget_s: float
    concurrency: int = 8
    spans: int = 512
    sweep_others: bool = True


NORMAL = Plan(
    warmup=2.0,
    duration=10.0,
    sweep_warmup=1.0,
    sweep_duration=5.0,
    session_sizes=(1_000, 10_000, 100_000, 1_000_000),
    batch_sizes=(64, 512, 4096),
    events=1_000_000,
    load_budget_s=240.0,
)
QUICK = Plan(
    warmup=0.5,
    duration=1.5,
    sweep_warmup=0.3,
    sweep_duration=1.0,
    session_sizes=(1_000, 5_000),
    batch_sizes=(64, 512),
    events=20_000,
    load_budget_s=60.0,
)


class Progress:
    """One line per step on stderr, stamped with the time since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        print(
            f"[bench {time.monotonic() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True
        )


@dataclass(frozen=True, slots=True)
class Memory:
    """VmHWM (peak) and VmRSS (now) of a process, in MiB."""

    peak_mb: float
    rss_mb: float


def memory(pid: int) -> Memory:
    """Read VmHWM and VmRSS from /proc/<pid>/status."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return Memory(values["VmHWM"], values["VmRSS"])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_env() -> dict[str, str]:
    """The environment for child processes: ours, minus anything that configures the service."""
    return {k: v for k, v in os.environ.items() if not k.startswith("USER_ENRICHER_")}


class Child:
    """A child process whose stderr goes to a log file."""

    def __init__(self, name: str, argv: Sequence[str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
        )
        self.pid = self.proc.pid
        self.address = ""

    def read_ready_line(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The JSON line the child prints once it listens."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                self.fail("did not start in time")
        line = self.proc.stdout.readline()
        if not line:
            self.fail("exited before listening")
        ready: dict[str, Any] = json.loads(line)
        return ready

    def memory(self) -> Memory:
        """Peak and current RSS."""
        return memory(self.pid)

    def fail(self, why: str) -> None:
        """Stop and raise, showing the end of the child's log."""
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name}: {why}\n--- {self.log} ---\n{tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_file.close()


C = TypeVar("C", bound=Child)


def start_listener(name: str, module: str, logs: Path, *args: str) -> Child:
    """Start a benchmark module that prints {"grpc": address} once listening."""
    child = Child(name, [sys.executable, "-m", module, *args], logs)
    child.address = child.read_ready_line()["grpc"]
    return child


class ServiceChild(Child):
    """``python -m processor serve`` with a generated config."""

    def __init__(
        self,
        name: str,
        sink: str,
        logs: Path,
        *,
        compression: str,
        usage: bool = True,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        grpc_port, api_port = free_port(), free_port()
        config = service_config(grpc_port, api_port, sink, compression, usage, overrides)
        parse_config(config, base_dir=logs, env={})  # fail here, not in the child
        path = logs / f"{re.sub(r'[^a-z0-9]+', '-', name.lower())}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        super().__init__(
            name, [sys.executable, "-m", "processor", "serve", "--config", str(path)], logs
        )
        self.address = f"127.0.0.1:{grpc_port}"
        self.api = f"http://127.0.0.1:{api_port}"
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"exited with {self.proc.returncode}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.api}/readyz", timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        self.fail("not ready in time")

    def sessions_active(self) -> int:
        """The service's own count of stored sessions (from /metrics)."""
        with urllib.request.urlopen(f"{self.api}/metrics", timeout=10) as response:
            text = response.read().decode()
        found = re.search(r"^user_enricher_sessions_active (\S+)$", text, re.M)
        return int(float(found.group(1))) if found else -1


def service_config(
    grpc_port: int,
    api_port: int,
    sink: str,
    compression: str,
    usage: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The service's config: the defaults, except what a benchmark has to set (printed).

    ``overrides`` replaces keys per section (e.g. ``{"correlation": {}}`` restores
    the default hold).
    """
    config: dict[str, Any] = {
        "usage": {"enabled": usage},
        "receiver": {"grpc_endpoint": f"127.0.0.1:{grpc_port}", "http_endpoint": ""},
        "exporter": {"endpoint": sink, "insecure": True, "compression": compression},
        "api": {
            "enabled": True,
            "endpoint": f"127.0.0.1:{api_port}",
            "token": TOKEN,
            "rate_limit": {"requests_per_second": 0},
        },
        "sessions": {"max_sessions": 2_000_000},
        "correlation": {"hold": 0},
        "logging": {"level": "warning", "format": "json"},
    }
    for section, values in (overrides or {}).items():
        config[section] = values if not values else {**config.get(section, {}), **values}
    return config


CONFIG_NOTE = (
    "service config: defaults (usage metrics on, 10 export consumers, queue 1000, merge 2 MiB) "
    "except "
    "correlation.hold: 0, api.rate_limit off (for loading), sessions.max_sessions: 2,000,000, "
    "receiver.http_endpoint off, logging warning"
)


# ---------------------------------------------------------------------- load generator


class LoadRunner:
    """Runs ``benchmarks.loadgen`` as a process and returns its JSON."""

    def __init__(self, sink: Child, progress: Progress) -> None:
        self._sink = sink
        self._progress = progress
        self._run_id = 0

    def run(
        self,
        label: str,
        target: Child,
        *,
        spans: int,
        warmup: float,
        duration: float,
        concurrency: int = 8,
        rate: float = 0.0,
        span_time_ns: int = 0,
        shape: str = "narrow",
        settle_s: float = 10.0,
    ) -> dict[str, Any]:
        """One measured window against ``target``; the result carries ``label``."""
        self._run_id = self._run_id % 255 + 1
        mode = f"{rate:,.0f} spans/s open loop" if rate else f"{concurrency} in flight"
        self._progress(
            f"load: {label}: {shape} {spans}-span batches, {mode}, {warmup:g}+{duration:g} s"
        )
        argv = [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            f"--target={target.address}",
            f"--sink={self._sink.address}",
            f"--spans={spans}",
            f"--concurrency={concurrency}",
            f"--rate={rate}",
            f"--warmup={warmup}",
            f"--duration={duration}",
            f"--target-pid={target.pid}",
            f"--run-id={self._run_id}",
            f"--span-time-ns={span_time_ns}",
            f"--shape={shape}",
            f"--settle={settle_s}",
        ]
        if target is not self._sink:
            argv.append(f"--sink-pid={self._sink.pid}")
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=warmup + duration + settle_s + 120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"loadgen failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout)
        result["label"] = label
        bad = {k: v for k, v in result["status"].items() if k != "OK"}
        self._progress(
            f"      {result['delivered_spans_per_s']:,.0f} spans/s delivered, "
            f"p50 {result['latency_ms']['p50']:.2f} ms, p99 {result['latency_ms']['p99']:.2f} ms, "
            f"cpu {_cpu_text(result)}, enriched {result['enriched_share']:.1%}"
            + (f", errors {bad}" if bad else "")
            + (f", {result['spans_lost']} acknowledged spans lost" if result["spans_lost"] else "")
            + (
                f", {result['undelivered_acknowledged']} acknowledged requests not delivered"
                if result["undelivered_acknowledged"]
                else ""
            )
            + (
                f", {result['sample_span_mismatches']} sampled requests with missing spans"
                if result["sample_span_mismatches"]
                else ""
            )
        )
        return result


def _cpu_text(result: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in result["cpu_utilisation"].items())


# ---------------------------------------------------------------------- session loading


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / _NS, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def gateway_sessions(now_ns: int) -> list[str]:
    """One session per gateway address, covering an hour either side of now."""
    start, end = iso(now_ns - 3600 * _NS), iso(now_ns + 3600 * _NS)
    return [
        f'{{"source_ip":"{address}","user":{{"id":"user{i}","email":"user{i}@example.com",'
        f'"name":"User {i}","roles":["user"]}},"start":"{start}","end":"{end}"}}'
        for i, address in enumerate(ADDRESSES)
    ]


def gateway_events(at_ns: int) -> list[str]:
    """One request event per gateway address at ``at_ns`` (what the filter function sends)."""
    at = iso(at_ns)
    return [
        f'{{"kind":"request","source_ip":"{address}","user":{{"id":"user{i}",'
        f'"email":"user{i}@example.com"}},"start":"{at}"}}'
        for i, address in enumerate(ADDRESSES)
    ]


def other_sessions(first: int, count: int, now_ns: int) -> Iterator[str]:
    """Sessions on addresses no span comes from (10.x.y.z), each open for the next 30+ min."""
    for i in range(first, first + count):
        start = iso(now_ns - (i % 1800) * _NS)
        yield (
            f'{{"source_ip":"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",'
            f'"user":{{"id":"other{i}"}},"start":"{start}","ttl_seconds":5400}}'
        )


def request_events(count: int, now_ns: int, addresses: int = 10_000) -> Iterator[str]:
    """Request events from the last minute: ``addresses`` source addresses, 50k users."""
    for i in range(count):
        a = i % addresses
        at = iso(now_ns - (i * 60_000 // max(count, 1)) * 1_000_000)
        yield (
            f'{{"kind":"request","source_ip":"172.16.{a >> 8 & 255}.{a & 255}",'
            f'"user":{{"id":"u{i % 50_000}","email":"u{i % 50_000}@example.com"}},'
            f'"model":"gpt-4o","start":"{at}"}}'
        )


def _bodies(items: Iterator[str]) -> Iterator[bytes]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == PUSH_BATCH:
            yield ('{"sessions":[' + ",".join(chunk) + "]}").encode()
            chunk = []
    if chunk:
        yield ('{"sessions":[' + ",".join(chunk) + "]}").encode()


@dataclass(slots=True)
class Loaded:
    """What a push stored and how long it took."""

    accepted: int = 0
    seconds: float = 0.0
    capped: bool = False


async def _push(api: str, items: Iterator[str], budget_s: float) -> Loaded:
    loaded = Loaded()
    bodies = _bodies(items)
    start = time.monotonic()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as http:

        async def client() -> None:
            for body in bodies:
                async with http.post(f"{api}/v1/sessions", data=body) as response:
                    text = await response.text()
                    if response.status != 200:
                        raise RuntimeError(f"push answered {response.status}: {text[:500]}")
                    loaded.accepted += json.loads(text)["accepted"]
                if time.monotonic() - start > budget_s:
                    loaded.capped = True
                    return

        await asyncio.gather(*(client() for _ in range(PUSH_CLIENTS)))
    loaded.seconds = time.monotonic() - start
    return loaded


def push(service: ServiceChild, items: Iterator[str], budget_s: float = 3600.0) -> Loaded:
    """POST ``items`` to /v1/sessions in batches of 1000 from several concurrent clients."""
    return asyncio.run(_push(service.api, items, budget_s))


# ---------------------------------------------------------------------- profiling


def profile(
    service: ServiceChild, runner: LoadRunner, plan: Plan, out: Path, progress: Progress
) -> list[tuple[str, float]]:
    """py-spy samples the service under closed-loop load; returns the top frames by own time."""
    spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    if spy is None:
        progress("profile: py-spy not found (pip install py-spy); skipped")
        return []
    seconds = max(2, int(plan.duration))
    progress(f"profile: py-spy record {seconds} s on the service under load -> {out}")
    argv = [spy, "record", "-d", str(seconds), "-r", "200", "-f", "raw", "-o", str(out)]
    argv += ["-p", str(service.pid)]
    recorder = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    runner.run(
        "service under py-spy (figures not used)",
        service,
        spans=plan.spans,
        warmup=0.5,
        duration=seconds + 1.0,
        concurrency=plan.concurrency,
    )
    _, err = recorder.communicate(timeout=60)
    if recorder.returncode != 0 or not out.exists():
        progress(f"profile: py-spy failed: {err.decode(errors='replace')[-500:]}")
        return []
    return own_time(out.read_text())


_LINE = re.compile(r":\d+\)$")


def own_time(raw: str, top: int = 15) -> list[tuple[str, float]]:
    """Top functions by own (leaf) samples in py-spy's raw (collapsed stack) output, in %.

    Time in C code called from a Python function (protobuf decode and encode, say)
    is that function's own time; line numbers are merged.
    """
    own: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        own[_LINE.sub(")", stack.rsplit(";", 1)[-1])] += int(count)
    total = sum(own.values()) or 1
    return [(frame, 100 * n / total) for frame, n in own.most_common(top)]


# ---------------------------------------------------------------------- report


def machine() -> str:
    """nproc, CPU model, Python and the gRPC/protobuf versions."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cpus = len(os.sched_getaffinity(0))
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="ascii") as f:
        mem = f", {int(f.readline().split()[1]) / (1 << 20):.0f} GiB RAM"
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("grpcio", "protobuf", "aiohttp")
    )
    return (
        f"nproc {cpus}, {model}{mem}, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {versions}, "
        f"{platform.system()} {platform.release()}"
    )


def _lat(result: dict[str, Any], key: str = "latency_ms") -> str:
    return f"{result[key]['p50']:.1f} / {result[key]['p99']:.1f}"


def _per_cpu(result: dict[str, Any]) -> str:
    per100k = result["target_cpu_s_per_100k_spans"]
    return f"{100_000 / per100k:,.0f}" if per100k else "-"


def _cpu100k(result: dict[str, Any]) -> str:
    per100k = result["target_cpu_s_per_100k_spans"]
    return f"{per100k:.3f}" if per100k else "-"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass
class Report:
    """Everything measured, for the tables."""

    plan: Plan
    machine: str
    throughput: list[tuple[dict[str, Any], Memory | None, str]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)
    sessions: list[tuple[int, dict[str, Any], Memory, Loaded]] = field(default_factory=list)
    batches: list[tuple[int, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    events: tuple[int, Loaded, Memory, Memory] | None = None
    sink_capacity: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None  # the pass-through the ratio is taken against
    service: dict[str, Any] | None = None
    profile: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The Markdown report."""
        out: list[str] = []
        add = out.append
        add("## End-to-end benchmark (`make bench`)")
        add("")
        add(f"Machine: {self.machine}.")
        p = self.plan
        add(
            f"Load: `benchmarks/loadgen.py`, the same pre-encoded {p.spans}-span AgentGateway "
            f"batch (15 attributes, mixed IPv4/IPv6 `src.addr`), {p.concurrency} calls in "
            f"flight, {p.warmup:g} s warm-up then {p.duration:g} s measured; each party in its "
            "own process. spans/s = spans delivered to the sink in the window. CPU = utime + "
            "stime of the target process only. Peak RSS = VmHWM after the run."
        )
        add("")
        add(
            "| target | spans/s | vs pass-through | p50 / p99 request ms | "
            "CPU s per 100k spans | spans per CPU-second | peak RSS MiB |"
        )
        add("|---|---|---|---|---|---|---|")
        base = self.reference["delivered_spans_per_s"] if self.reference else 0.0
        for result, mem, _ in self.throughput:
            ratio = result["delivered_spans_per_s"] / base if base else 0.0
            add(
                f"| {result['label']} | {result['delivered_spans_per_s']:,.0f} | {ratio:.2f} | "
                f"{_lat(result)} | {_cpu100k(result)} | {_per_cpu(result)} | "
                f"{f'{mem.peak_mb:.0f}' if mem else '-'} |"
            )
        add(
            f"| OpenTelemetry Collector, full pipeline (published) | {COLLECTOR_FULL_PIPELINE} "
            "| | | | | |"
        )
        add(
            f"| OpenTelemetry Collector, k8sattributes (published) | {COLLECTOR_K8SATTRIBUTES} "
            "| | | | | |"
        )
        ratios = self.ratios()
        if ratios:
            add("")
            add(ratios)
        if self.sink_capacity:
            add("")
            add(
                f"The sink alone (load generator straight into it) takes "
                f"{self.sink_capacity['delivered_spans_per_s']:,.0f} spans/s, so it is not the "
                "bottleneck."
            )
        for note in self.notes:
            add("")
            add(note)
        if self.latency:
            add("")
            rate = self.latency[0]["rate_requested"]
            add(
                f"Latency at half of the service's peak: {rate:,.0f} spans/s, open loop (one "
                "request on a fixed schedule), each target measured alone. Delivery = from the "
                "send to the request's arrival at the sink (the service answers once a request "
                "is queued, before it forwards; the pass-through answers after the forward)."
            )
            add("")
            add(
                "| path | request p50 / p99 ms | delivery p50 / p99 ms | "
                "added delivery p99 ms (vs straight to the sink) |"
            )
            add("|---|---|---|---|")
            direct = self.latency[0]["delivery_ms"]["p99"]
            for result in self.latency:
                added = result["delivery_ms"]["p99"] - direct
                add(
                    f"| {result['label']} | {_lat(result)} | {_lat(result, 'delivery_ms')} | "
                    f"{added:+.1f} |"
                )
        if self.sessions:
            add("")
            add(
                "Active sessions (the 4 gateway addresses plus sessions on other addresses, "
                "pushed over the HTTP API in batches of 1000 by "
                f"{PUSH_CLIENTS} concurrent clients), {p.sweep_warmup:g}+{p.sweep_duration:g} s "
                "each:"
            )
            add("")
            add(
                "| sessions | spans/s | CPU s per 100k spans | p99 request ms | RSS MiB "
                "| load time |"
            )
            add("|---|---|---|---|---|---|")
            for size, result, mem, loaded in self.sessions:
                load = (
                    f"{loaded.accepted:,} in {loaded.seconds:.1f} s"
                    + (" (capped)" if loaded.capped else "")
                    if loaded.accepted
                    else "-"
                )
                add(
                    f"| {size:,} | {result['delivered_spans_per_s']:,.0f} | {_cpu100k(result)} | "
                    f"{result['latency_ms']['p99']:.1f} | {mem.rss_mb:.0f} | {load} |"
                )
        if self.batches:
            add("")
            add(
                f"Batch size, {p.concurrency} in flight, "
                f"{p.sweep_warmup:g}+{p.sweep_duration:g} s each:"
            )
            add("")
            add(
                "| spans per request | pass-through spans/s | service spans/s | ratio | "
                "service p99 request ms | service CPU s per 100k |"
            )
            add("|---|---|---|---|---|---|")
            for size, passthrough, service in self.batches:
                a, b = passthrough["delivered_spans_per_s"], service["delivered_spans_per_s"]
                add(
                    f"| {size} | {a:,.0f} | {b:,.0f} | {b / a if a else 0:.2f} | "
                    f"{service['latency_ms']['p99']:.1f} | {_cpu100k(service)} |"
                )
        if self.events:
            count, loaded, before, after = self.events
            add("")
            add(
                f"Memory with {count:,} request events (10,000 addresses, 50,000 users, the last "
                f"minute; pushed into the gzip service above): RSS {before.rss_mb:.0f} MiB before "
                f"loading, {after.rss_mb:.0f} MiB "
                f"after (peak {after.peak_mb:.0f} MiB); loaded over HTTP in {loaded.seconds:.1f} s "
                f"({loaded.accepted / loaded.seconds if loaded.seconds else 0:,.0f} events/s)"
                + (", capped by the time budget" if loaded.capped else "")
                + "."
            )
        add("")
        add("Targets:")
        add("")
        for line in self.targets():
            add(f"- {line}")
        if self.profile:
            add("")
            add("Profile of the service under load (py-spy, own time, top frames):")
            add("")
            add("| own % | frame |")
            add("|---|---|")
            for frame, share in self.profile:
                add(f"| {share:.1f} | `{frame}` |")
        return "\n".join(out)

    def ratios(self) -> str:
        """Service / pass-through ratios of throughput, CPU per span and peak RSS."""
        rows = {label: (result, mem) for result, mem, label in self.throughput}
        if self.service is None or self.reference is None:
            return ""
        (s, s_mem), (b, b_mem) = rows[self.service["label"]], rows[self.reference["label"]]
        cpu_s, cpu_b = s["target_cpu_s_per_100k_spans"], b["target_cpu_s_per_100k_spans"]
        parts = [
            f"throughput {s['delivered_spans_per_s'] / b['delivered_spans_per_s']:.2f}",
            f"CPU per span {cpu_s / cpu_b:.2f}" if cpu_s and cpu_b else "",
            f"peak RSS {s_mem.peak_mb / b_mem.peak_mb:.2f}" if s_mem and b_mem else "",
            f"p99 request latency {s['latency_ms']['p99'] / b['latency_ms']['p99']:.2f}",
        ]
        return (
            f"Service / pass-through ({s['label']} against {b['label']}): "
            + ", ".join(p for p in parts if p)
            + "."
        )

    def targets(self) -> list[str]:
        """One PASS/MISS line per target."""
        lines = []
        if self.service and self.reference:
            s, b = self.service["delivered_spans_per_s"], self.reference["delivered_spans_per_s"]
            lines.append(
                f"{_verdict(s >= RATIO_TARGET * b)} service throughput >= {RATIO_TARGET} x "
                f"pass-through: {s:,.0f} / {b:,.0f} = {s / b if b else 0:.2f} "
                f"(against the {self.reference['label']})"
            )
            lines.append(
                f"{_verdict(s >= ABSOLUTE_TARGET)} service throughput >= {ABSOLUTE_TARGET:,.0f} "
                f"spans/s: {s:,.0f}"
            )
        if len(self.latency) >= 2:
            direct = self.latency[0]["delivery_ms"]["p99"]
            service = self.latency[-1]
            added = service["delivery_ms"]["p99"] - direct
            lines.append(
                f"{_verdict(added <= ADDED_P99_TARGET_MS)} p99 added latency <= "
                f"{ADDED_P99_TARGET_MS:g} ms at half of peak, spans needing no hold "
                f"(hold: 0): {added:+.1f} ms on delivery "
                f"(service {service['delivery_ms']['p99']:.1f} vs straight to the sink "
                f"{direct:.1f}); sender-seen p99 "
                f"{service['latency_ms']['p99']:.1f} ms"
            )
        if len(self.sessions) >= 2:
            rates = [r["delivered_spans_per_s"] for _, r, _, _ in self.sessions]
            cpus = [r["target_cpu_s_per_100k_spans"] or 0.0 for _, r, _, _ in self.sessions]
            flat = min(rates) >= FLAT_TOLERANCE * max(rates)
            first, last = self.sessions[0][0], self.sessions[-1][0]
            lines.append(
                f"{_verdict(flat)} lookup cost flat from {first:,} to {last:,} sessions "
                f"(slowest >= {FLAT_TOLERANCE} x fastest): spans/s "
                + " / ".join(f"{r:,.0f}" for r in rates)
                + ", CPU s per 100k "
                + " / ".join(f"{c:.3f}" for c in cpus)
            )
        if self.events:
            count, _, _, after = self.events
            lines.append(
                f"{_verdict(after.rss_mb <= RSS_TARGET_MB)} RSS <= {RSS_TARGET_MB:.0f} MB with "
                f"{count:,} request events: {after.rss_mb:.0f} MiB"
            )
        return lines


# ---------------------------------------------------------------------- the run


def run(plan: Plan, profile_to: Path | None, json_to: Path | None) -> Report:
    """Every step, in order; children are stopped whatever happens."""
    progress = Progress()
    report = Report(plan, machine())
    progress(f"machine: {report.machine}")
    children: list[Child] = []
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        logs = Path(tmp)
        try:
            _steps(plan, report, logs, children, progress, profile_to, raw)
        finally:
            for child in reversed(children):
                child.stop()
    if json_to is not None:
        json_to.write_text(json.dumps(raw, indent=1, default=str))
    return report


def _steps(
    plan: Plan,
    report: Report,
    logs: Path,
    children: list[Child],
    progress: Progress,
    profile_to: Path | None,
    raw: dict[str, Any],
) -> None:
    def start(child: C) -> C:
        children.append(child)
        return child

    def stop(child: Child) -> None:
        child.stop()
        children.remove(child)

    progress("start: sink")
    sink = start(start_listener("sink", "benchmarks.bench_sink", logs))
    runner = LoadRunner(sink, progress)
    raw["sink_capacity"] = report.sink_capacity = runner.run(
        "sink alone",
        sink,
        spans=plan.spans,
        warmup=plan.sweep_warmup,
        duration=plan.sweep_duration,
        concurrency=plan.concurrency,
    )

    # 1. Pass-through, glibc defaults then malloc tuned (the service tunes malloc).
    def headline(label: str, target: Child, span_time_ns: int = 0) -> dict[str, Any]:
        result = runner.run(
            label,
            target,
            spans=plan.spans,
            warmup=plan.warmup,
            duration=plan.duration,
            concurrency=plan.concurrency,
            span_time_ns=span_time_ns,
        )
        mem = target.memory()
        report.throughput.append((result, mem, label))
        raw.setdefault("throughput", []).append({"result": result, "memory": mem})
        return result

    progress("start: pass-through (glibc malloc defaults)")
    untuned = start(
        start_listener("pass-through", "benchmarks.passthrough", logs, f"--forward={sink.address}")
    )
    headline("pass-through, glibc malloc defaults", untuned)
    stop(untuned)
    progress("start: pass-through (malloc tuned as serve does)")
    passthrough = start(
        start_listener(
            "pass-through tuned",
            "benchmarks.passthrough",
            logs,
            f"--forward={sink.address}",
            "--tune-malloc",
        )
    )
    report.reference = headline("pass-through, malloc tuned", passthrough)

    # 2. The service, sessions on the 4 gateway addresses plus others up to the first size.
    progress("start: service (hold 0, exporter compression none)")
    service = start(ServiceChild("service", sink.address, logs, compression="none"))
    now = time.time_ns()
    first = plan.session_sizes[0]
    loaded = push(service, iter(gateway_sessions(now)))
    loaded_others = push(service, other_sessions(0, first - len(ADDRESSES), now))
    loaded.accepted += loaded_others.accepted
    loaded.seconds += loaded_others.seconds
    progress(
        f"pushed {loaded.accepted:,} sessions in {loaded.seconds:.1f} s; "
        f"active {service.sessions_active():,}"
    )
    report.service = headline(
        f"service, {first:,} sessions, hold 0, exporter compression none", service
    )
    service_peak = report.service["delivered_spans_per_s"]

    if profile_to is not None:
        report.profile = profile(service, runner, plan, profile_to, progress)

    # 3. Latency at half of the service's peak, same schedule for each path.
    rate = service_peak / 2
    for label, target in (
        ("straight to the sink", sink),
        ("pass-through, malloc tuned", passthrough),
        ("service", service),
    ):
        report.latency.append(
            runner.run(
                label,
                target,
                spans=plan.spans,
                warmup=plan.sweep_warmup,
                duration=plan.duration,
                rate=rate,
            )
        )
    raw["latency"] = report.latency

    # 4. Batch sizes.
    for size in plan.batch_sizes:
        results = [
            runner.run(
                f"{label}, {size}-span batches",
                target,
                spans=size,
                warmup=plan.sweep_warmup,
                duration=plan.sweep_duration,
                concurrency=plan.concurrency,
            )
            for label, target in (("pass-through", passthrough), ("service", service))
        ]
        report.batches.append((size, results[0], results[1]))
    raw["batches"] = report.batches
    stop(passthrough)

    # 5. Active sessions: grow the same service's store, measure at each size.
    stored = first
    for size in plan.session_sizes:
        sweep_load = Loaded()
        if size > stored:
            progress(f"push: {size - stored:,} more sessions (to {size:,})")
            sweep_load = push(
                service, other_sessions(stored, size - stored, time.time_ns()), plan.load_budget_s
            )
            stored += sweep_load.accepted
            progress(
                f"pushed {sweep_load.accepted:,} in {sweep_load.seconds:.1f} s "
                f"({sweep_load.accepted / max(sweep_load.seconds, 1e-9):,.0f}/s)"
                + (" - capped by the time budget" if sweep_load.capped else "")
                + f"; active {service.sessions_active():,}"
            )
        elif size == first:
            sweep_load = loaded
        result = runner.run(
            f"service, {stored:,} sessions",
            service,
            spans=plan.spans,
            warmup=plan.sweep_warmup,
            duration=plan.sweep_duration,
            concurrency=plan.concurrency,
        )
        report.sessions.append((stored, result, service.memory(), sweep_load))
        if sweep_load.capped:
            break
    raw["sessions"] = report.sessions
    stop(service)

    # 6. The request-event path (what the filter function produces) on a fresh service.
    progress("start: service with request events on the gateway addresses")
    events_service = start(ServiceChild("service events", sink.address, logs, compression="none"))
    span_time = time.time_ns()
    push(events_service, iter(gateway_events(span_time - _NS)))
    headline(
        "service, request events on the 4 addresses (event link), hold 0",
        events_service,
        span_time_ns=span_time,
    )
    stop(events_service)

    # 7. Per-user usage metrics off, to show what they cost.
    progress("start: service (usage metrics off)")
    plain = start(
        ServiceChild("service no usage", sink.address, logs, compression="none", usage=False)
    )
    now = time.time_ns()
    push(plain, iter(gateway_sessions(now)))
    push(plain, other_sessions(0, first - len(ADDRESSES), now))
    headline(f"service, {first:,} sessions, hold 0, compression none, usage.enabled: false", plain)
    stop(plain)

    # 8. Exporter gzip (the default), then memory with many request events.
    progress("start: service (exporter compression gzip, the default)")
    gzip_service = start(ServiceChild("service gzip", sink.address, logs, compression="gzip"))
    now = time.time_ns()
    push(gzip_service, iter(gateway_sessions(now)))
    push(gzip_service, other_sessions(0, first - len(ADDRESSES), now))
    headline(
        f"service, {first:,} sessions, hold 0, exporter compression gzip (default)", gzip_service
    )
    before = gzip_service.memory()
    progress(f"push: {plan.events:,} request events")
    events = push(gzip_service, request_events(plan.events, time.time_ns()), plan.load_budget_s)
    after = gzip_service.memory()
    progress(
        f"pushed {events.accepted:,} events in {events.seconds:.1f} s; active "
        f"{gzip_service.sessions_active():,}; RSS {before.rss_mb:.0f} -> {after.rss_mb:.0f} MiB"
    )
    report.events = (events.accepted, events, before, after)
    raw["events"] = report.events
    stop(gzip_service)
    report.notes.append(CONFIG_NOTE + ".")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: short, small sweeps")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="py-spy raw output here")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else NORMAL
    report = run(plan, args.profile, args.json)
    print(report.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
