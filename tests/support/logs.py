"""The tests' structlog configuration: structlog's defaults with plain tracebacks.

structlog's own default renders each logged error with rich, every frame's local variables
included: seconds of a served instance's event loop in a test when a server it uses dies, long
enough for its Redis calls to time out. Tests that configure logging themselves put this back.
"""

from __future__ import annotations

import structlog


def use_test_logging() -> None:
    """Configure structlog as the tests run it (called at start, and after a test's own)."""
    structlog.reset_defaults()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.StackInfoRenderer(),
            structlog.dev.set_exc_info,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
        ]
    )
