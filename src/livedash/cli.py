"""The `livedash` command: parses, builds settings, calls a run_* function."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from livedash.auth.tokens import issue_token
from livedash.errors import LivedashError
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
DEMO_PASSWORD = "admin"  # a local demo's sign-in; set only when admin has no password yet


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
    from livedash.auth.sessions import run_set_password
    from livedash.service import run_demo
    from livedash.simulator import seed_hospital

    settings = _settings(db, port=port, host=host)
    _migrate(settings)
    with console.status("Seeding the hospital..."):
        summary = asyncio.run(seed_hospital(settings.database_url, seed=seed, zone=settings.zone))
    token = issue_token(settings, "admin", Role.SUPER_ADMIN)
    demo_password = asyncio.run(
        run_set_password(settings, "admin", DEMO_PASSWORD, only_if_unset=True)
    )

    def ready() -> None:
        console.print(
            f"[bold]livedash demo[/bold]: {summary.departments} departments, "
            f"{summary.beds} beds, simulator at speed {speed:g}. Open the dashboard "
            "(signed in as super_admin) at:"
        )
        typer.echo(f"http://{host}:{port}/#token={token}")
        if demo_password:
            console.print(f"Or sign in as admin with the password {DEMO_PASSWORD!r} (demo only).")
        console.print(f"Token for API clients: {token}\nPress Ctrl+C to stop.")

    asyncio.run(run_demo(settings, seed=seed, speed=speed, on_ready=ready))


ServePortOption = Annotated[
    int | None, typer.Option(help="TCP port to listen on (default: LIVEDASH_PORT, else 8000).")
]
ServeHostOption = Annotated[
    str | None,
    typer.Option(help="Address to listen on (default: LIVEDASH_HOST, else 127.0.0.1)."),
]


@app.command()
def serve(port: ServePortOption = None, host: ServeHostOption = None, db: DbOption = None) -> None:
    """Run the service (no simulator) against the configured database."""
    from livedash.service import run_service

    settings = _settings(db, port=port, host=host)
    _migrate(settings)

    def ready() -> None:
        console.print(
            f"livedash serving on http://{settings.host}:{settings.port}/ (Ctrl+C to stop)"
        )

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
    from livedash.auth.users import run_find_user

    settings = _settings(db)
    if settings.check_users:
        _migrate(settings)
        if not asyncio.run(run_find_user(settings, sub)):
            console.print(
                f"Note: {sub!r} is not an active user, so the service will refuse this token; "
                f"add it with `livedash user add {sub} --role {role.value}` first."
            )
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


user_app = typer.Typer(help="Manage the dashboard's users.", no_args_is_help=True)
app.add_typer(user_app, name="user")


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(help="The user name (the `sub` of its tokens).")],
    role: Annotated[Role, typer.Option(help="super_admin, admin or viewer.")] = Role.VIEWER,
    department: Annotated[
        list[str] | None,
        typer.Option("--department", "-d", help="Department code it may see (repeatable)."),
    ] = None,
    inactive: Annotated[
        bool, typer.Option("--inactive", help="Keep the user but refuse its tokens.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Create a dashboard user, or update its role, departments and whether it is active."""
    from livedash.auth.users import run_save_user

    settings = _settings(db)
    _migrate(settings)
    departments = department or ()
    created = asyncio.run(run_save_user(settings, username, role, departments, active=not inactive))
    console.print(
        f"{'Created' if created else 'Updated'} {username!r}: {role.value}, "
        f"departments {', '.join(departments) or '-'}{', inactive' if inactive else ''}."
    )


@user_app.command("password")
def user_password(
    username: Annotated[str, typer.Argument(help="The user (a row of the users table).")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Set a user's password for the dashboard's sign-in (asks for it twice)."""
    import sys

    from livedash.auth.sessions import run_set_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise typer.BadParameter("the password is empty")
    settings = _settings(db)
    _migrate(settings)
    try:
        done = asyncio.run(run_set_password(settings, username, password))
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    if not done:
        console.print(f"There is no user named {username!r}.")
        raise typer.Exit(1)
    console.print(f"Set the password of {username!r}.")


api_key_app = typer.Typer(
    help="API keys for machine writers (the hospital's main application posting to ingest).",
    no_args_is_help=True,
)
app.add_typer(api_key_app, name="api-key")


@api_key_app.command("create")
def api_key_create(
    name: Annotated[str, typer.Argument(help="A name for the key, such as the writer's.")],
    scope: Annotated[
        list[str] | None, typer.Option(help="What the key may do (repeatable): ingest.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Create an API key and print it once: store it in the writer's configuration now."""
    from livedash.auth.api_keys import run_create_api_key

    settings = _settings(db)
    _migrate(settings)
    try:
        key = asyncio.run(run_create_api_key(settings, name, scope or ["ingest"]))
    except LivedashError as error:
        console.print(f"Cannot create the key: {error}")
        raise typer.Exit(1) from None
    typer.echo(key)
    console.print(
        f"API key {name!r} created. It is shown only this once and cannot be shown again; "
        "if it is lost, revoke it and create another."
    )


@api_key_app.command("revoke")
def api_key_revoke(
    name: Annotated[str, typer.Argument(help="The key's name, as `livedash api-key list` shows.")],
    db: DbOption = None,
) -> None:
    """Revoke an API key: requests using it are refused from now on."""
    from livedash.auth.api_keys import run_revoke_api_key

    settings = _settings(db)
    _migrate(settings)
    if not asyncio.run(run_revoke_api_key(settings, name)):
        console.print(f"There is no active API key named {name!r}.")
        raise typer.Exit(1)
    console.print(f"Revoked the API key {name!r}.")


@api_key_app.command("list")
def api_key_list(db: DbOption = None) -> None:
    """List the API keys (never their secrets): name, prefix, scopes and when last used."""
    from rich.table import Table

    from livedash.auth.api_keys import run_list_api_keys

    settings = _settings(db)
    _migrate(settings)
    table = Table()
    table.add_column("name", overflow="fold")  # a name is what `revoke` takes: never cut
    table.add_column("prefix", no_wrap=True)
    table.add_column("scopes", overflow="fold")
    for heading in ("created", "last used", "revoked"):
        table.add_column(f"{heading} (UTC)")
    for key in asyncio.run(run_list_api_keys(settings)):
        table.add_row(
            key.name,
            key.prefix,
            ", ".join(key.scopes),
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"{key.last_used_at:%Y-%m-%d %H:%M}" if key.last_used_at else "never",
            f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "",
        )
    Console().print(table)


report_app = typer.Typer(help="Generate reports and manage their schedules.", no_args_is_help=True)
app.add_typer(report_app, name="report")
schedule_app = typer.Typer(help="Scheduled reports.", no_args_is_help=True)
report_app.add_typer(schedule_app, name="schedule")
_STEPS = ("computing", "rendering", "storing", "writing")
_DONE = {"pause": "paused", "resume": "resumed", "delete": "deleted"}
T = TypeVar("T")


def _explained(work: Coroutine[Any, Any, T]) -> T:
    """Run `work`; a refusal (bad input, unknown report) is printed, not a traceback."""
    try:
        return asyncio.run(work)
    except LivedashError as error:
        console.print(f"[bold red]Refused:[/bold red] {escape(str(error))}")
        raise typer.Exit(2) from None


@report_app.command("generate")
def report_generate(
    report_type: Annotated[
        str,
        typer.Option(
            "--type", help="occupancy, admissions, emergency, appointments, revenue or alerts."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the report.")],
    period: Annotated[
        str | None, typer.Option(help="yesterday, last-week, month:2026-11, ...")
    ] = None,
    start: Annotated[
        datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First local day.")
    ] = None,
    end: Annotated[
        datetime | None,
        typer.Option("--to", formats=["%Y-%m-%d"], help="Local day after the last."),
    ] = None,
    department: Annotated[
        str | None, typer.Option(help="A department code (default: the whole hospital).")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="json, csv or pdf.")] = "pdf",
    db: DbOption = None,
) -> None:
    """Generate one report into a file (the archive keeps it too)."""
    from rich.progress import Progress

    from livedash.reports.commands import run_generate

    settings = _settings(db)
    _migrate(settings)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("computing", total=len(_STEPS))

        def on_step(step: str) -> None:
            progress.update(task, description=step, completed=_STEPS.index(step))

        info = _explained(
            run_generate(
                settings,
                report_type=report_type,
                period=period,
                start=start.date() if start else None,
                end=end.date() if end else None,
                department=department,
                output_format=output_format,
                out=out,
                on_step=on_step,
            )
        )
        progress.update(task, completed=len(_STEPS))
    if info.status != "done":
        console.print(f"[bold red]Report {info.id} failed:[/bold red] {escape(info.error or '')}")
        raise typer.Exit(1)
    console.print(
        f"Report {info.id} ({info.report_type}, {escape(info.period_label)}) written to "
        f"{escape(str(out))}: {info.size:,} bytes, sha256 {info.sha256}"
    )


@report_app.command("list")
def report_list(
    report_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    db: DbOption = None,
) -> None:
    """List generated reports, newest first."""
    from rich.table import Table

    from livedash.reports.commands import run_list

    settings = _settings(db)
    _migrate(settings)
    table = Table()
    for heading in ("id", "type", "department", "period", "format", "status", "size", "by"):
        table.add_column(heading, overflow="fold")
    for info in _explained(run_list(settings, report_type=report_type, limit=limit)):
        table.add_row(
            str(info.id),
            info.report_type,
            info.department or "hospital",
            info.period_label,
            info.format,
            info.status if info.status != "failed" else f"failed: {info.error}",
            f"{info.size:,}" if info.size is not None else "",
            info.requested_by,
        )
    Console().print(table)


@schedule_app.command("add")
def schedule_add(
    name: Annotated[str, typer.Option(help="What the schedule is called in e-mails.")],
    report_type: Annotated[str, typer.Option("--type", help="The report type.")],
    cron: Annotated[
        str, typer.Option(help="@daily, @weekly, ... or five cron fields (hospital time).")
    ],
    recipient: Annotated[
        list[str] | None, typer.Option(help="A username to mail it to (repeat).")
    ] = None,
    department: Annotated[str | None, typer.Option(help="A department code.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="json, csv or pdf.")] = "pdf",
    misfire: Annotated[
        str, typer.Option(help="run_once or skip: runs missed while down.")
    ] = "run_once",
    db: DbOption = None,
) -> None:
    """Add a report schedule."""
    from pydantic import ValidationError

    from livedash.reports.commands import run_schedule_create
    from livedash.reports.schedules import ScheduleRequest

    settings = _settings(db)
    _migrate(settings)
    try:
        request = ScheduleRequest.model_validate(
            {
                "name": name,
                "report_type": report_type,
                "cron": cron,
                "recipients": recipient or [],
                "department": department,
                "format": output_format,
                "misfire": misfire,
            }
        )
    except ValidationError as error:
        console.print(f"[bold red]Not a valid schedule:[/bold red] {escape(str(error))}")
        raise typer.Exit(2) from error
    info = _explained(run_schedule_create(settings, request))
    console.print(f"Schedule {info.id} added; next run {info.next_run_at:%Y-%m-%d %H:%M} UTC.")


@schedule_app.command("list")
def schedule_list(db: DbOption = None) -> None:
    """List report schedules and how their runs went."""
    from rich.table import Table

    from livedash.reports.commands import run_schedule_list

    settings = _settings(db)
    _migrate(settings)
    table = Table()
    for heading in ("id", "name", "type", "cron", "next run (UTC)", "state", "last error"):
        table.add_column(heading, overflow="fold")
    for info in _explained(run_schedule_list(settings)):
        table.add_row(
            str(info.id),
            info.name,
            info.report_type + (f" {info.department}" if info.department else ""),
            info.cron,
            f"{info.next_run_at:%Y-%m-%d %H:%M}",
            "paused" if info.paused else ("failing" if info.failures else "active"),
            info.last_error or "",
        )
    Console().print(table)


@schedule_app.command("pause")
def schedule_pause(schedule: Annotated[int, typer.Argument()], db: DbOption = None) -> None:
    """Pause a schedule."""
    _change_schedule(schedule, "pause", db)


@schedule_app.command("resume")
def schedule_resume(schedule: Annotated[int, typer.Argument()], db: DbOption = None) -> None:
    """Resume a paused schedule from now on."""
    _change_schedule(schedule, "resume", db)


@schedule_app.command("delete")
def schedule_delete(schedule: Annotated[int, typer.Argument()], db: DbOption = None) -> None:
    """Delete a schedule (its reports stay)."""
    _change_schedule(schedule, "delete", db)


def _change_schedule(ident: int, action: str, db: Path | None) -> None:
    from livedash.reports.commands import run_schedule_change

    settings = _settings(db)
    _migrate(settings)
    _explained(run_schedule_change(settings, ident, action))
    console.print(f"Schedule {ident}: {_DONE[action]}.")


@app.command()
def doctor(db: DbOption = None) -> None:
    """Check that the configured database (and Redis) can run the service; say how to fix it."""
    from livedash.changefeed.doctor import run_doctor

    settings = _settings(db)
    report = asyncio.run(run_doctor(settings))
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"livedash doctor: {escape(report.target)}")
    if report.note:
        out.print(escape(report.note))
    width = max((len(check.name) for check in report.checks), default=0)
    for check in report.checks:
        status = "[green]OK  [/green]" if check.ok else "[bold red]FAIL[/bold red]"
        out.print(f"{status}  {escape(check.name.ljust(width))}  {escape(check.detail)}")
        for number, line in enumerate(check.remedy.splitlines()):
            lead = "fix:" if number == 0 else "    "
            out.print(f"      {' ' * width}  {lead} {escape(line)}")
    failed = len(report.failed)
    if failed:
        out.print(f"{failed} of {len(report.checks)} checks failed.")
        raise typer.Exit(1)
    out.print(f"All {len(report.checks)} checks passed.")


@app.command("api-doc")
def api_doc() -> None:
    """Print the realtime API reference (Markdown) generated from the wire models."""
    from livedash.app import api_reference

    typer.echo(api_reference(), nl=False)


@app.command("vapid-keys")
def vapid_keys(
    out: Annotated[Path, typer.Option(help="Where to write the private key (PEM, mode 0600).")],
) -> None:
    """Create the Web Push (VAPID) key pair: the private key to a file for
    LIVEDASH_VAPID_PRIVATE_KEY_FILE, the public key printed for reference."""
    from livedash.notifications.push import generate_vapid_keys

    if out.exists():
        typer.echo(f"{out} exists: not overwritten (remove it first to make a new key)", err=True)
        raise typer.Exit(1)
    keys = generate_vapid_keys()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.write_text(keys.private_key_pem)
    typer.echo(f"private key written to {out}; set LIVEDASH_VAPID_PRIVATE_KEY_FILE={out}")
    typer.echo(f"public key (browsers get it from /api/notifications/push/key): {keys.public_key}")


def main() -> None:
    """Entry point of the `livedash` script."""
    app()
