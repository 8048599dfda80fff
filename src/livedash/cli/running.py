"""Commands that run livedash: `demo`, `serve`, `simulate`, `migrate`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from livedash.cli import DbOption, app, console, explained, migrate_database, settings_for
from livedash.settings import DEFAULT_DATA_DIR, Settings

DEMO_PASSWORD = "admin"  # a local demo's sign-in; set only when admin has no password yet
DEMO_LOG = "livedash-demo.log"

SeedOption = Annotated[
    int, typer.Option(help="Seed of the simulated hospital (same seed, same hospital).")
]


def demo_log_file(settings: Settings) -> Path:
    """Where the demo logs: beside its SQLite file (else in .livedash/)."""
    from sqlalchemy.engine import make_url

    database = make_url(settings.database_url).database
    if settings.database_url.startswith("sqlite") and database and database != ":memory:":
        return Path(database).absolute().parent / DEMO_LOG
    return DEFAULT_DATA_DIR.absolute() / DEMO_LOG


@app.command()
def demo(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port to listen on.")] = 8000,
    db: DbOption = None,
    seed: SeedOption = 7,
    speed: Annotated[
        float, typer.Option(min=0.01, help="Simulated time per real time (60: an hour a minute).")
    ] = 120.0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log to the terminal (stderr), not the file.")
    ] = False,
) -> None:
    """Try livedash on this machine: a simulated hospital and its live dashboard, on SQLite.

    Creates (or reuses) the database file, migrates it, adds a simulated hospital if it has
    none, gives the `admin` user the password `admin` if it has none, and serves the dashboard
    until Ctrl+C. It prints the address to open, the sign-in and an access token for API
    clients. Logs go to livedash-demo.log beside the database unless --verbose.

    Example: livedash demo --port 8080 --db /tmp/demo.db
    """
    from livedash.auth.sessions import run_set_password
    from livedash.auth.tokens import issue_token
    from livedash.doctor import port_in_use
    from livedash.realtime.imports import import_engineio_for_serving

    import_engineio_for_serving()  # first: it must be the first import of python-engineio
    from livedash.service import run_demo
    from livedash.simulator import seed_hospital
    from livedash.store.models import Role

    settings = settings_for(db, port=port, host=host, log_file=None if verbose else demo_log_file)
    log_file = None if verbose else demo_log_file(settings)
    busy = port_in_use(settings.host, settings.port)
    if busy:
        console.print(f"Cannot serve on {settings.host}:{settings.port}: {busy}. Try --port.")
        raise typer.Exit(1)
    migrate_database(settings)
    with console.status("Seeding the hospital..."):
        summary = asyncio.run(seed_hospital(settings.database_url, seed=seed, zone=settings.zone))
    token = issue_token(settings, "admin", Role.SUPER_ADMIN)
    demo_password = asyncio.run(
        run_set_password(settings, "admin", DEMO_PASSWORD, only_if_unset=True)
    )
    url = f"http://{host}:{port}/"

    def ready() -> None:
        # Plain lines, never wrapped: the URL and the token must survive copy and paste.
        sign_in = (
            f"user admin, password {DEMO_PASSWORD} (demo only)"
            if demo_password
            else "user admin, with the password it already had (livedash user password admin)"
        )
        lines = [
            f"livedash demo: {summary.departments} departments, {summary.beds} beds, "
            f"simulated at {speed:g}x real time.",
            f"Dashboard:    {url}",
            f"Sign in:      {sign_in}",
            f"Skip sign-in: {url}#token={token}",
            f"API token:    {token}",
            f"Logs:         {log_file if log_file is not None else 'this terminal (stderr)'}",
            "Press Ctrl+C to stop.",
        ]
        typer.echo("\n".join(lines))

    try:
        explained(
            run_demo(settings, seed=seed, speed=speed, on_ready=ready), failure="Cannot start"
        )
    except SystemExit as stop:
        if stop.code not in (0, None):  # uvicorn could not start: it said why in the log
            console.print(f"The demo stopped: see {log_file or 'the log above'}.")
        raise


@app.command()
def serve(
    port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="TCP port (default: LIVEDASH_PORT, else 8000)."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Address to listen on (default: LIVEDASH_HOST, else 127.0.0.1)."),
    ] = None,
    db: DbOption = None,
    socket_workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=64,
            help="Processes that serve WebSocket clients beside this one, on the same port "
            "(embedded default; default: LIVEDASH_SOCKET_WORKERS, else 0).",
        ),
    ] = None,
) -> None:
    """Run the service (no simulator) against the configured database until stopped.

    Migrates the database first, then serves the dashboard, the REST API and the socket.io
    endpoint. With PostgreSQL and Redis configured, run one per machine behind a proxy; they
    elect among themselves which one reads the change feed. On the embedded default,
    --socket-workers 2 serves WebSocket clients from two more processes, on the same port.
    Stops cleanly on Ctrl+C or SIGTERM. Logs go to stderr.

    Example: LIVEDASH_DATABASE_URL=postgresql+asyncpg://livedash@db/hospital livedash serve
    """
    from livedash.realtime.imports import import_engineio_for_serving

    import_engineio_for_serving()  # first: it must be the first import of python-engineio
    from livedash.service import run_service

    settings = settings_for(db, port=port, host=host, socket_workers=socket_workers)
    migrate_database(settings, in_child=True)

    def ready() -> None:
        console.print(
            f"livedash serving on http://{settings.host}:{settings.port}/ (Ctrl+C to stop)",
            soft_wrap=True,
        )

    explained(run_service(settings, on_ready=ready), failure="Cannot start")


@app.command()
def migrate(db: DbOption = None) -> None:
    """Create or upgrade the database schema (and, on SQLite, its change capture).

    Safe to run again: it applies only the migrations the database lacks. Changes the schema
    only, never the hospital's rows. Run it before starting a new version of livedash.

    Example: livedash migrate --db /var/lib/livedash/livedash.db
    """
    settings = settings_for(db)
    migrate_database(settings)
    console.print("Database is up to date.")


@app.command()
def simulate(
    db: DbOption = None,
    seed: SeedOption = 7,
    speed: Annotated[float, typer.Option(min=0.01, help="Simulated time per real time.")] = 60.0,
) -> None:
    """Write realistic hospital activity into the database, as the main application would.

    Adds a simulated hospital if the database has none, then admits, moves and discharges
    patients, books appointments and bills, until Ctrl+C. For test and training systems
    only: never point it at a hospital's real database.

    Example: livedash simulate --db /tmp/demo.db --speed 600
    """
    from livedash.simulator import HospitalSimulator, seed_hospital

    settings = settings_for(db)
    migrate_database(settings)
    events: dict[str, int] = {}

    async def run() -> int:
        with console.status("Seeding the hospital..."):
            summary = await seed_hospital(settings.database_url, seed=seed, zone=settings.zone)
        console.print(
            f"Simulating {summary.departments} departments, {summary.beds} beds at {speed:g}x "
            "real time (Ctrl+C stops).",
            soft_wrap=True,
        )
        stop = asyncio.Event()
        with console.status("Simulating...") as status:

            def counted(kind: str) -> None:
                events[kind] = events.get(kind, 0) + 1
                status.update(f"Simulating: {sum(events.values())} events so far")

            async with HospitalSimulator(
                settings.database_url, seed=seed, zone=settings.zone
            ) as simulator:
                return await simulator.run(speed=speed, stop=stop, on_event=counted)

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        done = ", ".join(f"{count} {kind}" for kind, count in sorted(events.items()))
        console.print(f"Simulator stopped after {sum(events.values())} events ({done}).")
