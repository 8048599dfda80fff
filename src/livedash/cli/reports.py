"""Commands about reports: `report generate|list` and `report schedule ...`."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from livedash.cli import DbOption, app, console, explained, migrate_database, settings_for

report_app = typer.Typer(help="Generate reports and manage their schedules.", no_args_is_help=True)
app.add_typer(report_app, name="report")
schedule_app = typer.Typer(help="Scheduled reports.", no_args_is_help=True)
report_app.add_typer(schedule_app, name="schedule")
_STEPS = ("computing", "rendering", "storing", "writing")
_DONE = {"pause": "paused", "resume": "resumed", "delete": "deleted"}


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
    """Generate one report into a file (the archive keeps it too).

    Reads the stored roll-ups of the period (no running service needed) and writes the
    report to --out; a copy goes to the report archive (LIVEDASH_REPORT_DIR or the database)
    and a row to the reports table. Periods are in the hospital's time zone.

    Example: livedash report generate --type occupancy --period last-week --format pdf
    --out occupancy.pdf
    """
    from rich.progress import Progress

    from livedash.reports.commands import run_generate

    settings = settings_for(db)
    migrate_database(settings)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("computing", total=len(_STEPS))

        def on_step(step: str) -> None:
            progress.update(task, description=step, completed=_STEPS.index(step))

        info = explained(
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
    """List generated reports, newest first: type, department, period, status, size, who.

    Reads the reports table; changes nothing.

    Example: livedash report list --type revenue --limit 20
    """
    from rich.table import Table

    from livedash.reports.commands import run_list

    settings = settings_for(db)
    migrate_database(settings)
    table = Table()
    for heading in ("id", "type", "department", "period", "format", "status", "size", "by"):
        table.add_column(heading, overflow="fold")
    for info in explained(run_list(settings, report_type=report_type, limit=limit)):
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
    """Add a report schedule: a report generated on a cron schedule and mailed to users.

    Writes a row of report_schedules; the instance that reads the change feed runs it at
    its time (hospital time zone) and e-mails it to the recipients (LIVEDASH_SMTP_HOST).

    Example: livedash report schedule add --name "Weekly beds" --type occupancy --cron
    @weekly --recipient ann
    """
    from pydantic import ValidationError

    from livedash.reports.commands import run_schedule_create
    from livedash.reports.schedules import ScheduleRequest

    settings = settings_for(db)
    migrate_database(settings)
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
    info = explained(run_schedule_create(settings, request))
    console.print(f"Schedule {info.id} added; next run {info.next_run_at:%Y-%m-%d %H:%M} UTC.")


@schedule_app.command("list")
def schedule_list(db: DbOption = None) -> None:
    """List report schedules and how their runs went (next run, paused, last error).

    Example: livedash report schedule list
    """
    from rich.table import Table

    from livedash.reports.commands import run_schedule_list

    settings = settings_for(db)
    migrate_database(settings)
    table = Table()
    for heading in ("id", "name", "type", "cron", "next run (UTC)", "state", "last error"):
        table.add_column(heading, overflow="fold")
    for info in explained(run_schedule_list(settings)):
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
    """Pause a schedule: it does not run until resumed.

    Example: livedash report schedule pause 3
    """
    _change_schedule(schedule, "pause", db)


@schedule_app.command("resume")
def schedule_resume(schedule: Annotated[int, typer.Argument()], db: DbOption = None) -> None:
    """Resume a paused schedule from now on (the runs missed meanwhile are not made up).

    Example: livedash report schedule resume 3
    """
    _change_schedule(schedule, "resume", db)


@schedule_app.command("delete")
def schedule_delete(schedule: Annotated[int, typer.Argument()], db: DbOption = None) -> None:
    """Delete a schedule (the reports it made stay in the archive).

    Example: livedash report schedule delete 3
    """
    _change_schedule(schedule, "delete", db)


def _change_schedule(ident: int, action: str, db: Path | None) -> None:
    from livedash.reports.commands import run_schedule_change

    settings = settings_for(db)
    migrate_database(settings)
    explained(run_schedule_change(settings, ident, action))
    console.print(f"Schedule {ident}: {_DONE[action]}.")
