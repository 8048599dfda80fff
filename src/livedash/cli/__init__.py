"""The `livedash` command: parses, builds settings, calls a run_* function.

The commands live by what they are about, each module registering on `app`:

- `running`: demo, serve, simulate, migrate;
- `users`: user, token, revoke, api-key;
- `reports`: report (generate, list, schedule);
- `alerts`: alerts (list, silence, silences, unsilence);
- `operations`: doctor, status, bench, api-doc, settings-doc, vapid-keys.

Settings come from `LIVEDASH_` variables (or `.env`), and the options a command has; a value
that cannot be used stops the command with a message naming it (exit code 2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from livedash.errors import ConfigurationError, LivedashError
from livedash.observability.logging import configure_logging
from livedash.settings import Settings
from livedash.settings_doc import load_settings

app = typer.Typer(
    help="livedash: a real-time operations dashboard for hospitals. Every command reads its "
    "settings from LIVEDASH_ environment variables or a .env file (docs/settings.md); "
    "`livedash COMMAND --help` tells what each one does and touches.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True)
"""Progress, notes and refusals: on stderr, so that stdout holds only what scripts read.
Never wrapped by rich (the terminal wraps for the eye): a path or a token copied from it works."""

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="SQLite database file (default: LIVEDASH_DATABASE_URL, else .livedash/livedash.db).",
    ),
]
T = TypeVar("T")
_OPTIONS = {
    "port": "--port",
    "host": "--host",
    "database_url": "--db",
    "socket_workers": "--socket-workers",
}


def settings_for(
    db: Path | None = None,
    *,
    log_file: Callable[[Settings], Path] | None = None,
    refuse: bool = True,
    **overrides: Any,
) -> Settings:
    """The settings: the environment, then the options given; logging configured from them.

    A setting that cannot be used ends the command with a message naming it (exit code 2),
    or with `refuse=False` raises that `ConfigurationError`. `log_file`: where to log
    instead of stderr, given the settings.
    """
    values = {key: value for key, value in overrides.items() if value is not None}
    if db is not None:
        values["database_url"] = f"sqlite+aiosqlite:///{db.expanduser().absolute()}"
    try:
        settings = load_settings({k: v for k, v in _OPTIONS.items() if k in values}, **values)
        file = log_file(settings) if log_file is not None else None
        configure_logging(settings.log_level, json=settings.log_json, file=file)
    except ConfigurationError as error:
        if not refuse:
            raise
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    return settings


def migrate_database(settings: Settings, *, in_child: bool = False) -> None:
    """Create or upgrade the schema, with a spinner; `in_child`: in a process of its own, for a
    command that goes on to serve for long (it then holds none of the migrations' memory)."""
    from livedash.store.migrate import upgrade, upgrade_in_child

    with console.status("Migrating the database..."):
        if in_child:
            upgrade_in_child(settings.database_url)
        else:
            upgrade(settings.database_url)


def explained(work: Coroutine[Any, Any, T], *, failure: str = "Refused") -> T:
    """Run `work`; a refusal (bad input, unknown name) is printed, not a traceback."""
    try:
        return asyncio.run(work)
    except LivedashError as error:
        console.print(f"[bold red]{failure}:[/bold red] {escape(str(error))}")
        raise typer.Exit(2) from None


def main() -> None:
    """Entry point of the `livedash` script."""
    app()


# The commands register themselves on `app` when their modules are imported, in the order
# `livedash --help` lists them.
# isort: off
from livedash.cli import running, users, alerts, reports, operations  # noqa: E402
# isort: on

__all__ = [
    "DbOption",
    "alerts",
    "app",
    "configure_logging",
    "console",
    "explained",
    "main",
    "migrate_database",
    "operations",
    "reports",
    "running",
    "settings_for",
    "users",
]
