"""``user-enricher report``: per-user LLM usage from the spans stored in Jaeger.

This module wires the parts together: options -> time windows -> Jaeger pages ->
aggregation -> rendering. Every expected failure becomes one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import yaml
from pydantic import ValidationError
from yarl import URL

from processor.correlate.config import PriceConfig
from processor.correlate.identity import USER_EMAIL, USER_HASH, USER_ID, USER_TEAM
from processor.correlate.usage import Price
from processor.tools.report.aggregate import Filters, aggregate
from processor.tools.report.jaeger import (
    MIN_WINDOW_US,
    ApiMode,
    Fetched,
    JaegerError,
    JaegerHttp,
    Query,
    connect,
    fetch_spans,
    shown_url,
)
from processor.tools.report.options import DEFAULT_JAEGER_URL, JAEGER_URL_ENV
from processor.tools.report.progress import Progress
from processor.tools.report.render import Context, render
from processor.tools.report.timerange import RangeError, TimeRange, parse_duration, resolve_range

__all__ = ["Options", "ReportError", "load_prices", "run_report", "server_filter"]

EXIT_ERROR = 2
MAX_WINDOWS = 10_000
_HASH = re.compile(r"[0-9a-fA-F]{32}")
_SHOWN_SERVICES = 10


class ReportError(Exception):
    """An option or input file is unusable; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Options:
    """The validated options of one report."""

    jaeger: str
    api: ApiMode
    service: str
    time_range: TimeRange
    window_us: int
    filters: Filters
    limit: int
    timeout_s: float
    prices: dict[str, Price]
    fmt: str


def run_report(args: argparse.Namespace, *, now_us: int | None = None) -> int:
    """Run the report; 0 on success, 2 with one line on stderr on any expected failure."""
    progress = Progress(sys.stderr)
    try:
        options = _options(args, time.time_ns() // 1000 if now_us is None else now_us)
        output = asyncio.run(_report(options, progress, sys.stderr))
    except (ReportError, RangeError, JaegerError) as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        progress.close()
        print("interrupted", file=sys.stderr)
        return 130
    progress.close()
    sys.stdout.write(output)
    return 0


async def _report(options: Options, progress: Progress, stderr: TextIO) -> str:
    """Fetch the range from Jaeger and render the report."""
    api, fetched = await _fetch(options, progress, stderr)
    progress.close()
    if fetched.saturated:
        print(
            f"warning: {fetched.saturated} window(s) of {MIN_WINDOW_US // 1_000_000} s still "
            f"returned --limit {options.limit} traces; spans may be missing (raise --limit)",
            file=stderr,
        )
    report = aggregate(
        fetched.spans,
        service=options.service,
        time_range=options.time_range,
        filters=options.filters,
        prices=options.prices,
    )
    context = Context(
        jaeger=shown_url(options.jaeger),
        api=api,
        service=options.service,
        time_range=options.time_range,
        user=options.filters.user,
        team=options.filters.team,
    )
    return render(report, context, options.fmt)


async def _fetch(options: Options, progress: Progress, stderr: TextIO) -> tuple[str, Fetched]:
    """The API used and every span of the range, window by window."""
    query = Query(options.service, server_filter(options.filters), options.limit)
    async with aiohttp.ClientSession() as session:
        http = JaegerHttp(session, options.jaeger, options.timeout_s)
        connection = await connect(http, options.api)
        if connection.services is not None and options.service not in connection.services:
            shown = ", ".join(sorted(connection.services)[:_SHOWN_SERVICES]) or "none"
            print(
                f"warning: Jaeger has no service {options.service!r} (it has: {shown})", file=stderr
            )
        windows = options.time_range.split(options.window_us)
        fetched = await fetch_spans(connection.client, windows, query, progress)
    return connection.client.api, fetched


def server_filter(filters: Filters) -> dict[str, str]:
    """Exact attribute values Jaeger can filter on; the aggregation checks them again."""
    attributes: dict[str, str] = {}
    if filters.user:
        if "@" in filters.user:
            attributes[USER_EMAIL] = filters.user
        elif _HASH.fullmatch(filters.user):
            attributes[USER_HASH] = filters.user.lower()
        else:
            attributes[USER_ID] = filters.user
    if filters.team:
        attributes[USER_TEAM] = filters.team
    return attributes


# --------------------------------------------------------------------------- options


def _options(args: argparse.Namespace, now_us: int) -> Options:
    """Validate the parsed arguments."""
    time_range = resolve_range(since=args.since, start=args.start, end=args.end, now_us=now_us)
    if args.limit < 1:
        raise ReportError("--limit must be at least 1")
    if not args.timeout > 0:
        raise ReportError("--timeout must be more than 0 seconds")
    return Options(
        jaeger=_jaeger_url(args.jaeger or os.environ.get(JAEGER_URL_ENV) or DEFAULT_JAEGER_URL),
        api=args.api,
        service=args.service,
        time_range=time_range,
        window_us=_window(args.window, time_range),
        filters=Filters(user=(args.user or "").strip(), team=(args.team or "").strip()),
        limit=args.limit,
        timeout_s=args.timeout,
        prices=load_prices(args.prices) if args.prices else {},
        fmt=args.format,
    )


def _window(text: str, time_range: TimeRange) -> int:
    try:
        window = parse_duration(text)
    except RangeError as exc:
        raise ReportError(f"--window: {exc}") from None
    if window < MIN_WINDOW_US:
        raise ReportError("--window must be at least 1s")
    windows = -(-time_range.length_us // window)
    if windows > MAX_WINDOWS:
        raise ReportError(
            f"--window {text} splits the range into {windows:,} queries (at most "
            f"{MAX_WINDOWS:,}); use a longer --window"
        )
    return window


def _jaeger_url(text: str) -> str:
    """The Jaeger base URL without a trailing slash; it must be http(s)://host[:port][/path]."""
    try:
        url = URL(text.strip())
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        shown = shown_url(text)
        raise ReportError(f"invalid Jaeger URL {shown!r} (expected e.g. {DEFAULT_JAEGER_URL})")
    return str(url).rstrip("/")


def load_prices(path: str) -> dict[str, Price]:
    """Prices from a YAML file: ``model: {input_per_million, output_per_million}``.

    The mapping may also sit under ``prices:`` or ``usage: {prices: ...}``, so the
    service's own config file works as a price file.
    """
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read --prices file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ReportError(f"--prices file {path} is not valid YAML{where}") from None
    data = _price_table(data)
    if not isinstance(data, dict):
        raise ReportError(f"--prices file {path}: expected a mapping of model -> price")
    return {str(model): _price(path, str(model), value) for model, value in data.items()}


def _price_table(data: Any) -> Any:
    """The model -> price mapping, unwrapped from ``usage:`` and ``prices:`` if there."""
    for key in ("usage", "prices"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    return {} if data is None else data


def _price(path: str, model: str, value: Any) -> Price:
    try:
        price = PriceConfig.model_validate(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        where = f"{model}.{field}" if field else model
        raise ReportError(f"--prices file {path}: {where}: {error['msg']}") from None
    return Price(price.input_per_million, price.output_per_million)
