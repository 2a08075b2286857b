"""Command line: ``user-enricher serve | check-config | demo | report``. Only it exits."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog

from processor import __version__
from processor.app.config import Config, load_config
from processor.app.tuning import freeze_startup_objects, tune_malloc
from processor.errors import ConfigError
from processor.logsetup import configure_logging
from processor.tools.report.options import add_arguments as add_report_arguments

log = structlog.get_logger("processor.cli")
# Shutdown: in-flight calls may finish for this long, then the queue drains for
# exporter.queue.drain_timeout; past both plus the slack the process exits anyway.
SHUTDOWN_GRACE_S = 5.0
SHUTDOWN_SLACK_S = 5.0


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
        from processor.tools.report.command import run_report

        return run_report(args)
    from processor.tools.demo import run_demo

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
        _run_loop(_run(config))
    except ConfigError as exc:  # e.g. the directory file named by the config
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return 2
    except OSError as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    _exit_past_busy_workers()
    return 0


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` like ``asyncio.run``, but without waiting for worker threads.

    ``asyncio.run`` joins the default executor's threads before it returns: a
    worker still decoding a huge request would keep a stopped service alive
    until Kubernetes kills it. Here the loop is closed without joining them.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
        loop.run_until_complete(_cancel_the_rest())
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()  # shuts the default executor down without waiting


async def _cancel_the_rest() -> None:
    """Cancel the tasks still running (as ``asyncio.run`` does) and let them finish."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _exit_past_busy_workers() -> None:
    """Exit now if worker threads are still busy (their results have no one to go to).

    The interpreter would otherwise join them at exit. Everything the service
    acknowledged is delivered, spooled or counted by now (``service_stopped``).
    """
    busy = [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
    busy = [t for t in busy if not t.daemon]
    if busy:
        log.warning("exit_abandoning_workers", threads=len(busy))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


async def _run(config: Config) -> None:
    from processor.app.service import Service

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
    log.debug("startup_objects_frozen", objects=freeze_startup_objects())
    await stop.wait()
    log.info("shutdown_requested")
    # The hard deadline: in-flight calls get their grace, the queue its drain,
    # and whatever still hangs after that (a stuck TLS peer, Redis) is left.
    deadline = SHUTDOWN_GRACE_S + config.exporter.queue.drain_timeout + SHUTDOWN_SLACK_S
    try:
        async with asyncio.timeout(deadline):
            await service.shutdown(grace_s=SHUTDOWN_GRACE_S)
    except TimeoutError:
        log.error("shutdown_deadline_passed", seconds=deadline)
