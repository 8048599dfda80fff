"""Structured logging: configured once, by the entrypoint."""

from __future__ import annotations

import logging
import sys

import structlog

SOCKETIO_LOGGER = "livedash.socketio"
ENGINEIO_LOGGER = "livedash.engineio"
"""The loggers python-socketio and python-engineio are given (see `create_app`)."""


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Send structlog events (and the standard library's) to stderr, as text or JSON lines."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's records (uvicorn, python-socketio, python-engineio) become the
    # same events, with the logger's name as a field.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
    # Engine.IO's warnings are about what clients sent (a bad method, a send to a socket
    # gone), one line per request if a client likes. Socket.IO's one such warning (an event
    # before connecting) is counted by the gateway instead; its others (Redis) stay.
    logging.getLogger(ENGINEIO_LOGGER).setLevel(max(numeric, logging.ERROR))
