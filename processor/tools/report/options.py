"""The command-line options of ``user-enricher report`` (kept free of heavy imports)."""

from __future__ import annotations

import argparse

__all__ = ["DEFAULT_JAEGER_URL", "JAEGER_URL_ENV", "add_arguments"]

JAEGER_URL_ENV = "USER_ENRICHER_JAEGER_URL"
DEFAULT_JAEGER_URL = "http://localhost:16686"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the ``report`` subcommand."""
    parser.add_argument(
        "--jaeger",
        metavar="URL",
        help=f"Jaeger query service (default: ${JAEGER_URL_ENV}, else {DEFAULT_JAEGER_URL})",
    )
    parser.add_argument("--service", default="agentgateway", help="service name of the gateway")
    parser.add_argument(
        "--since", metavar="DURATION", help="the last 30m, 24h, 7d... (default 24h)"
    )
    parser.add_argument("--start", metavar="TIME", help="RFC 3339 time or date (UTC)")
    parser.add_argument("--end", metavar="TIME", help="RFC 3339 time or date (default: now)")
    parser.add_argument("--user", metavar="EMAIL_OR_ID", help="only this user (email, id or hash)")
    parser.add_argument("--team", metavar="TEAM", help="only users of this team (user.team)")
    parser.add_argument(
        "--format", choices=("table", "json", "csv"), default="table", help="default: table"
    )
    parser.add_argument(
        "--api",
        choices=("auto", "v3", "legacy"),
        default="auto",
        help="Jaeger query API (default auto: v3 when /api/v3/services exists, else legacy)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=500,
        metavar="N",
        help="traces per query; a window whose page comes back full is split (default 500)",
    )
    parser.add_argument(
        "--window", default="1h", metavar="DURATION", help="length of each query (default 1h)"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per request (default 30)"
    )
    parser.add_argument(
        "--prices", metavar="FILE", help="YAML model -> price, for calls the gateway did not price"
    )
