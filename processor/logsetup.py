"""Configures structlog once: JSON lines when stderr is not a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Literal

import structlog
from pydantic import BeforeValidator

from processor.config.base import Frozen
from processor.config.scalars import lower

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class LoggingConfig(Frozen):
    """Log level and output format (``auto`` = console on a TTY, JSON otherwise)."""

    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(lower)] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    """Route structlog to stderr at ``level``, as JSON or for humans."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        # Look sys.stderr up per logger, not once: it may be replaced after set-up.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_: object) -> structlog.PrintLogger:
    return structlog.PrintLogger(file=sys.stderr)
