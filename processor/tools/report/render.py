"""The report as an aligned table, JSON or CSV (pure: a Report in, text out)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from processor.tools.report.aggregate import Report, UserRow
from processor.tools.report.timerange import TimeRange, from_us

__all__ = ["CSV_COLUMNS", "Context", "render", "render_csv", "render_json", "render_table"]

CSV_COLUMNS = (
    "user",
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "errors",
    "top_models",
    "providers",
    "last_seen",
)
_TABLE_HEADER = (
    "USER",
    "REQUESTS",
    "INPUT TOKENS",
    "OUTPUT TOKENS",
    "COST (USD)",
    "ERRORS",
    "TOP MODELS",
    "PROVIDERS",
    "LAST SEEN (UTC)",
)
_NUMERIC = frozenset({1, 2, 3, 4, 5})  # right-aligned columns
_GAP = "  "


@dataclass(frozen=True, slots=True)
class Context:
    """Where the spans came from, shown above the table and included in the JSON."""

    jaeger: str
    api: str
    service: str
    time_range: TimeRange
    user: str = ""
    team: str = ""


def render(report: Report, context: Context, fmt: str) -> str:
    """The report in format ``fmt`` (table, json or csv), ending with a newline."""
    if fmt == "json":
        return render_json(report, context)
    if fmt == "csv":
        return render_csv(report)
    return render_table(report, context)


# --------------------------------------------------------------------------- table


def render_table(report: Report, context: Context) -> str:
    """A header line, the users, a TOTAL row and the attribution summary."""
    lines = [_context_line(context)]
    if not report.rows:
        lines.append(f"no LLM requests of service {context.service} in this range")
        return "\n".join(lines) + "\n"
    cells = [_TABLE_HEADER, *(_table_cells(row) for row in report.rows)]
    total = _table_cells(report.totals)
    widths = [max(len(row[i]) for row in [*cells, total]) for i in range(len(_TABLE_HEADER))]
    lines.extend(_aligned(row, widths) for row in cells)
    lines.append(_aligned(tuple("-" * width for width in widths), widths))
    lines.append(_aligned(total, widths))
    lines.append("")
    lines.append(coverage_line(report))
    if report.unpriced:
        lines.append(unpriced_line(report))
    return "\n".join(lines) + "\n"


def coverage_line(report: Report) -> str:
    """``attribution: 7 of 10 requests (70.0%) have a user: session 4, trace 3; 3 without``."""
    coverage = report.coverage
    line = (
        f"attribution: {coverage.with_user:,} of {coverage.requests:,} requests "
        f"({100 * coverage.share:.1f}%) have a user"
    )
    if coverage.by_method:
        line += ": " + ", ".join(f"{method} {count:,}" for method, count in coverage.by_method)
    without = coverage.requests - coverage.with_user
    if without:
        line += f"; {without:,} without"
        if coverage.ambiguous:
            line += f" ({coverage.ambiguous:,} ambiguous)"
    return line


def unpriced_line(report: Report) -> str:
    """Which requests have tokens but no cost."""
    models = ", ".join(report.unpriced_models)
    return (
        f"note: {report.unpriced:,} requests have no cost (not priced by the gateway, "
        f"no --prices entry): {models}"
    )


def _context_line(context: Context) -> str:
    start = _table_time(context.time_range.start_us)
    end = _table_time(context.time_range.end_us)
    line = (
        f"service {context.service} in Jaeger {context.jaeger} (API {context.api}), "
        f"{start} to {end} UTC"
    )
    filters = (("user", context.user), ("team", context.team))
    shown = [f"{name} {value}" for name, value in filters if value]
    return line + (f", {', '.join(shown)}" if shown else "")


def _table_cells(row: UserRow) -> tuple[str, ...]:
    return (
        row.user,
        f"{row.requests:,}",
        f"{row.input_tokens:,}",
        f"{row.output_tokens:,}",
        f"{row.cost_usd:,.4f}",
        f"{row.errors:,}",
        _counted(row.top_models),
        ", ".join(name for name, _ in row.providers),
        _table_time(row.last_seen_us) if row.last_seen_us is not None else "-",
    )


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    parts = [
        cell.rjust(width) if index in _NUMERIC else cell.ljust(width)
        for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ]
    return _GAP.join(parts).rstrip()


def _counted(pairs: Sequence[tuple[str, int]]) -> str:
    return ", ".join(f"{name} ({count:,})" for name, count in pairs)


def _table_time(t_us: int) -> str:
    return from_us(t_us).strftime("%Y-%m-%d %H:%M:%S")


def _iso_time(t_us: int) -> str:
    moment = from_us(t_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond:06d}Z" if moment.microsecond else "Z"
    )


# --------------------------------------------------------------------------- JSON


def render_json(report: Report, context: Context) -> str:
    """One JSON object: the query, ``users`` (a list of rows), ``totals`` and coverage."""
    coverage = report.coverage
    document = {
        "service": context.service,
        "jaeger": context.jaeger,
        "api": context.api,
        "range": {
            "start": _iso_time(context.time_range.start_us),
            "end": _iso_time(context.time_range.end_us),
        },
        "filters": {"user": context.user or None, "team": context.team or None},
        "users": [_json_row(row) for row in report.rows],
        "totals": {k: v for k, v in _json_row(report.totals).items() if k != "user"},
        "attribution": {
            "requests": coverage.requests,
            "with_user": coverage.with_user,
            "share": round(coverage.share, 4),
            "by_method": dict(coverage.by_method),
            "ambiguous": coverage.ambiguous,
        },
        "unpriced": {"requests": report.unpriced, "models": list(report.unpriced_models)},
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _json_row(row: UserRow) -> dict[str, Any]:
    return {
        "user": row.user,
        "requests": row.requests,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost_usd": round(row.cost_usd, 6),
        "errors": row.errors,
        "top_models": [{"model": name, "requests": count} for name, count in row.top_models],
        "providers": [{"provider": name, "requests": count} for name, count in row.providers],
        "last_seen": _iso_time(row.last_seen_us) if row.last_seen_us is not None else None,
    }


# --------------------------------------------------------------------------- CSV


def render_csv(report: Report) -> str:
    """A header row, then one row per user (no totals row: sum the columns)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        writer.writerow(
            (
                row.user,
                row.requests,
                row.input_tokens,
                row.output_tokens,
                f"{row.cost_usd:.6f}",
                row.errors,
                _counted(row.top_models),
                _counted(row.providers),
                _iso_time(row.last_seen_us) if row.last_seen_us is not None else "",
            )
        )
    return buffer.getvalue()
