"""Command line: ``user-enricher serve | check-config | demo | report``. Only it exits."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import structlog

from processor import __version__
from processor.config import Config, load_config
from processor.errors import ConfigError
from processor.logsetup import configure_logging
from processor.report.options import add_arguments as add_report_arguments
from processor.tuning import tune_malloc

log = structlog.get_logger("processor.cli")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="user-enricher",
        description="Attach the Open WebUI user to AgentGateway OTLP spans on their way to Jaeger.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    check = sub.add_parser("check-config", help="validate a config file and list every problem")
    check.add_argument("file", metavar="FILE")
    demo = sub.add_parser("demo", help="run the whole flow in one process, no outside services")
    demo.add_argument("--spans", type=int, default=12, help="AgentGateway spans to send")
    report = sub.add_parser("report", help="per-user LLM usage from the spans in Jaeger")
    add_report_arguments(report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``user-enricher`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "serve":
        return _serve(args.config)
    if args.command == "report":
        from processor.report.command import run_report

        return run_report(args)
    from processor.demo import run_demo

    configure_logging("warning", "console")
    return asyncio.run(run_demo(spans=args.spans))


def _check_config(path: str) -> int:
    try:
        load_config(path)
    except ConfigError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


def _serve(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    configure_logging(config.logging.level, config.logging.format)
    tune_malloc()
    try:
        asyncio.run(_run(config))
    except ConfigError as exc:  # e.g. the directory file named by the config
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    return 0


async def _run(config: Config) -> None:
    from processor.service import Service

    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except BaseException:
        await service.shutdown(grace_s=0)  # release whatever did start
        raise
    await stop.wait()
    log.info("shutdown_requested")
    await service.shutdown()
