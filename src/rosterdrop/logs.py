"""Logging set-up: structlog events as JSON lines for ops, pretty on a terminal.

Only the entry points (CLI, daemon) call ``configure_logging``; library
modules just ``structlog.get_logger(...)``. Standard-library loggers
(asyncssh, SQLAlchemy, watchdog) go through the same renderer, so one stream
of JSON lines carries everything.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from rosterdrop.config import LogSettings

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
NOISY = {"asyncssh": logging.WARNING, "sqlalchemy": logging.WARNING,
         "watchdog": logging.WARNING, "mail.log": logging.WARNING,
         # one line per request; rosterdrop.api logs one per collection instead
         "httpx": logging.WARNING, "httpcore": logging.WARNING}


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    console = settings.format == "console"
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = _LineHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[settings.level])
    for name, level in NOISY.items():
        logging.getLogger(name).setLevel(max(level, LEVELS[settings.level]))


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Each record leaves the process as one whole line, at once: a block-buffered stream
    (stdout to a file or pipe) would otherwise cut lines at its buffer's edge, and a kill
    would leave half a JSON line for the next process's first line to run into."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            self.stream.write(line)
            self.stream.flush()
        except Exception:  # logging's own rule: never raise into the caller
            self.handleError(record)
