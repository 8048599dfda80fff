"""Structured logging: configured once, by the entrypoint.

Every line is one event with fields: `timestamp` (UTC, ISO 8601), `level`, `event`, `logger`
(the module, or the standard library logger's name), and whatever the call gave. The
standard library's records (uvicorn, python-socketio, python-engineio) become the same
events. Context bound with `structlog.contextvars.bound_contextvars` joins every event
logged while it is bound: a request's `request_id` (`livedash.web.request_context`), a
socket's `sid` and `user` (`livedash.realtime.guard`).

Lines are JSON for machines (journald, Loki) or readable text for a terminal, on stderr or
appended to a file. Before rendering, `redact_secrets` blanks what must never be written:
values of sensitive fields, and tokens, API keys, passwords in URLs and SQL parameters
anywhere in a text. It is a second line of defence: code logs none of them in the first
place. docs/logging.md says all this for operators.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO, cast

import structlog

from livedash.errors import ConfigurationError

SOCKETIO_LOGGER = "livedash.socketio"
ENGINEIO_LOGGER = "livedash.engineio"
"""The loggers python-socketio and python-engineio are given (see `create_app`)."""

UVICORN_LOGGER = "uvicorn"
"""uvicorn's own log (`uvicorn.error`); its access log is off (`service.server_config`)."""

LEVELS = ("debug", "info", "warning", "error", "critical")
REDACTED = "[redacted]"

# A field is sensitive when one of the words of its name is one of these: `refresh_token`,
# `Authorization`, `set-cookie`, `jwt_secret`; `api_key` and `private_key` by their pair.
_SENSITIVE_WORDS = frozenset(
    {
        "token",
        "password",
        "passwords",
        "passwd",
        "secret",
        "secrets",
        "authorization",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "apikey",
        "jwt",
    }
)
_SENSITIVE_PAIRS = ("api_key", "private_key")
_WORD = re.compile(r"[^a-z0-9]+")
_TOKEN_CHARS = r"A-Za-z0-9_\-"
_SECRETS_IN_TEXT: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT: its header and payload are base64url JSON objects, so both start with "eyJ".
    (re.compile(rf"eyJ[{_TOKEN_CHARS}]*\.[{_TOKEN_CHARS}]+\.[{_TOKEN_CHARS}]*"), REDACTED),
    # An API key, `ldk_<prefix>_<secret>` (livedash.auth.api_keys), or any part of one.
    (re.compile(rf"ldk_[{_TOKEN_CHARS}]{{8,}}"), REDACTED),
    # A refresh token: `<16 characters>.<43 characters>` (livedash.auth.sessions).
    (
        re.compile(rf"(?<![{_TOKEN_CHARS}.])[{_TOKEN_CHARS}]{{16}}\.[{_TOKEN_CHARS}]{{43}}"),
        REDACTED,
    ),
    # Credentials in a header written out: "Bearer <token>", "Basic <user:password>".
    (re.compile(r"\b([Bb]earer|Basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), rf"\1 {REDACTED}"),
    # A password in a URL (a database URL in an error): scheme://user:password@host.
    (re.compile(r"(://[^\s:/@]+):[^\s/@]+@"), rf"\1:{REDACTED}@"),
    # A secret in a query string (a URL an HTTP client logged).
    (
        re.compile(
            r"([?&](?:access_token|refresh_token|token|password|api_key|key|secret)=)[^&#\s]+",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    # SQLAlchemy writes a failed statement's parameters (patients' names, password hashes)
    # into its errors' text, which errors of ours carry on.
    (re.compile(r"\[parameters: [^\n]*\]"), f"[parameters: {REDACTED}]"),
)
_MAX_DEPTH = 8


@functools.lru_cache(maxsize=1024)  # a few dozen field names, met in every event
def _sensitive(key: str) -> bool:
    words = [word for word in _WORD.split(key.lower()) if word]
    if _SENSITIVE_WORDS.intersection(words):
        return True
    joined = "_".join(words)
    return any(pair in joined for pair in _SENSITIVE_PAIRS)


def _harmless(value: Any) -> bool:
    """Whether a sensitive field's value says nothing secret (`password_set=True`)."""
    return value is None or isinstance(value, bool)


def redact_text(text: str) -> str:
    """`text` with every token, API key and password-looking part replaced by `REDACTED`."""
    for pattern, replacement in _SECRETS_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _redact(value: Any, depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if depth >= _MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and _sensitive(key) and not _harmless(value[key])
            else _redact(value[key], depth + 1)
            for key in value
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item, depth + 1) for item in value]
    # Rendered as its repr anyway (JSON and text alike): scrub that text.
    return redact_text(repr(value))


def redact_secrets(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """structlog processor: blank the values of sensitive fields (`token`, `password`,
    `authorization`...), and secrets found in any text (see `redact_text`)."""
    redacted: dict[str, Any] = _redact(event_dict)
    return redacted


def log_level(name: str) -> int:
    """The `logging` level called `name` (any case); `ConfigurationError` if there is none."""
    if name.lower() not in LEVELS:
        raise ConfigurationError(f"unknown log level {name!r}; known: {', '.join(LEVELS)}")
    return logging.getLevelNamesMapping()[name.upper()]


class _NamedLogger(structlog.WriteLogger):
    """structlog's writer, knowing the name it was asked for (the module) for `logger`."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


def _add_logger_name(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    record = event_dict.get("_record")
    name = record.name if record is not None else getattr(logger, "name", "")
    if name:
        event_dict["logger"] = name
    return event_dict


def log_file() -> Path | None:
    """The file this process logs to, if `configure_logging` was given one."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def configure_logging(
    level: str = "info", *, json: bool | None = None, file: Path | None = None
) -> None:
    """Send structlog events and the standard library's records to stderr, or append them
    to `file`, as JSON lines or text (`json` None: JSON unless written to a terminal)."""
    numeric = log_level(level)
    handler: logging.Handler
    stream: TextIO
    if file is None:
        handler, stream = logging.StreamHandler(sys.stderr), sys.stderr
    else:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            # The handler owns the file: configuring again closes it (basicConfig's force).
            file_handler = logging.FileHandler(file, encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(f"cannot write the log file {file}: {error}") from error
        handler, stream = file_handler, cast(TextIO, file_handler.stream)
    terminal = stream.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if (not terminal if json is None else json)
        else structlog.dev.ConsoleRenderer(colors=terminal)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_logger_name,
    ]
    # Redacted after the traceback is written out: an exception's text can carry secrets.
    last: list[structlog.typing.Processor] = [
        structlog.processors.format_exc_info,
        redact_secrets,
        renderer,
    ]
    structlog.configure(
        processors=[*shared, *last],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *args: _NamedLogger(stream, str(args[0]) if args else ""),
        # Not cached, so that configuring again (tests, a command's own choice) reaches the
        # modules' loggers already used; it costs about 2 µs an event.
        cache_logger_on_first_use=False,
    )
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *last],
        )
    )
    # Other libraries' information is chatter (httpx's even names whole URLs): only their
    # warnings and errors get through.
    logging.basicConfig(level=max(numeric, logging.WARNING), handlers=[handler], force=True)
    # uvicorn sets its loggers' levels when a server is configured: set them all again here.
    for name in (UVICORN_LOGGER, f"{UVICORN_LOGGER}.error"):
        logging.getLogger(name).setLevel(numeric)
    # Engine.IO's warnings are about what clients sent (a bad method, a send to a socket
    # gone), one line per request if a client likes. Socket.IO's one such warning (an event
    # before connecting) is counted by the gateway instead; its others (Redis) stay.
    logging.getLogger(ENGINEIO_LOGGER).setLevel(max(numeric, logging.ERROR))
