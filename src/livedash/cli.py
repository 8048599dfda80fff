"""The `livedash` command: parses, builds settings, calls a run_* function."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from livedash.auth.tokens import issue_token
from livedash.observability.logging import configure_logging
from livedash.settings import Settings
from livedash.store.models import Role

app = typer.Typer(
    help="livedash: a real-time operations dashboard for hospitals.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="SQLite database file (default: .livedash/livedash.db)."),
]
PortOption = Annotated[int, typer.Option(help="TCP port to listen on.")]
HostOption = Annotated[str, typer.Option(help="Address to listen on.")]


def _settings(db: Path | None = None, **overrides: object) -> Settings:
    values = {key: value for key, value in overrides.items() if value is not None}
    if db is not None:
        values["database_url"] = f"sqlite+aiosqlite:///{db.expanduser().absolute()}"
    settings = Settings(**values)  # type: ignore[arg-type]
    configure_logging(settings.log_level, json=settings.log_json)
    return settings


def _migrate(settings: Settings) -> None:
    from livedash.store.migrate import upgrade

    with console.status("Migrating the database..."):
        upgrade(settings.database_url)


@app.command()
def demo(
    port: PortOption = 8000,
    db: DbOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated hospital.")] = 7,
    speed: Annotated[
        float, typer.Option(min=0.01, help="Simulated time per real time (60: an hour a minute).")
    ] = 120.0,
    host: HostOption = "127.0.0.1",
) -> None:
    """Run the whole thing on SQLite: a seeded hospital, the simulator and the dashboard."""
    from livedash.service import run_demo
    from livedash.simulator import seed_hospital

    settings = _settings(db, port=port, host=host)
    _migrate(settings)
    with console.status("Seeding the hospital..."):
        summary = asyncio.run(seed_hospital(settings.database_url, seed=seed, zone=settings.zone))
    token = issue_token(settings, "admin", Role.SUPER_ADMIN)

    def ready() -> None:
        console.print(
            f"[bold]livedash demo[/bold]: {summary.departments} departments, "
            f"{summary.beds} beds, simulator at speed {speed:g}. Open the dashboard "
            "(signed in as super_admin) at:"
        )
        typer.echo(f"http://{host}:{port}/#token={token}")
        console.print(f"Token for API clients: {token}\nPress Ctrl+C to stop.")

    asyncio.run(run_demo(settings, seed=seed, speed=speed, on_ready=ready))


@app.command()
def serve(port: PortOption = 8000, host: HostOption = "127.0.0.1", db: DbOption = None) -> None:
    """Run the service (no simulator) against the configured database."""
    from livedash.service import run_service

    settings = _settings(db, port=port, host=host)
    _migrate(settings)

    def ready() -> None:
        console.print(f"livedash serving on http://{host}:{port}/ (Ctrl+C to stop)")

    asyncio.run(run_service(settings, on_ready=ready))


@app.command()
def migrate(db: DbOption = None) -> None:
    """Create or upgrade the database schema (and, on SQLite, its change capture)."""
    settings = _settings(db)
    _migrate(settings)
    console.print("Database is up to date.")


@app.command()
def simulate(
    db: DbOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated hospital.")] = 7,
    speed: Annotated[float, typer.Option(min=0.01, help="Simulated time per real time.")] = 60.0,
) -> None:
    """Write realistic hospital activity into the database, as the main application would."""
    from livedash.simulator import HospitalSimulator, seed_hospital

    settings = _settings(db)
    _migrate(settings)

    async def run() -> int:
        await seed_hospital(settings.database_url, seed=seed, zone=settings.zone)
        stop = asyncio.Event()
        async with HospitalSimulator(
            settings.database_url, seed=seed, zone=settings.zone
        ) as simulator:
            return await simulator.run(speed=speed, stop=stop)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        console.print("Simulator stopped.")


@app.command()
def token(
    role: Annotated[Role, typer.Option(help="super_admin, admin or viewer.")] = Role.SUPER_ADMIN,
    department: Annotated[
        list[str] | None, typer.Option("--department", "-d", help="Department code (repeatable).")
    ] = None,
    sub: Annotated[str, typer.Option(help="Subject (user name) of the token.")] = "cli-user",
    minutes: Annotated[int | None, typer.Option(min=1, help="Lifetime in minutes.")] = None,
    db: DbOption = None,
) -> None:
    """Print a signed access token for the configured signing key."""
    settings = _settings(db)
    typer.echo(issue_token(settings, sub, role, department or (), minutes=minutes))


@app.command()
def revoke(
    user: Annotated[
        str | None, typer.Option(help="Sign this user out: refuse every token they hold now.")
    ] = None,
    jti: Annotated[
        str | None, typer.Option(help="Refuse the one token with this ID (its jti claim).")
    ] = None,
    reason: Annotated[
        str, typer.Option(help="Why, kept with a revoked token ID.")
    ] = "revoked with livedash revoke",
    db: DbOption = None,
) -> None:
    """Revoke access tokens: all of a user's, or one by its ID; refused from their next use."""
    from livedash.auth.users import run_revoke

    if (user is None) == (jti is None):
        raise typer.BadParameter("give either --user or --jti")
    settings = _settings(db)
    _migrate(settings)
    if not asyncio.run(run_revoke(settings, user=user, jti=jti, reason=reason)):
        console.print(f"There is no user named {user!r}.")
        raise typer.Exit(1)
    console.print(f"Revoked the tokens of {user!r}." if user else f"Revoked token {jti!r}.")


@app.command("api-doc")
def api_doc() -> None:
    """Print the realtime API reference (Markdown) generated from the wire models."""
    from livedash.realtime.apidoc import render_api_doc

    typer.echo(render_api_doc(), nl=False)


def main() -> None:
    """Entry point of the `livedash` script."""
    app()
