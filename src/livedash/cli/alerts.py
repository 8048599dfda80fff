"""Commands about alerts: `alerts list`, `alerts silence`, `alerts silences`, `alerts unsilence`."""

from __future__ import annotations

import getpass
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from livedash.cli import DbOption, app, console, explained, migrate_database, settings_for
from livedash.store.models import AlertSeverity, AlertStatus

alerts_app = typer.Typer(
    help="See the alerts and hold back their notifications (silences), from the shell.",
    no_args_is_help=True,
)
app.add_typer(alerts_app, name="alerts")

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")
_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "green"}

DepartmentFilter = Annotated[
    list[str] | None,
    typer.Option(
        "--department", "-d", help="A department code, or `hospital` (repeatable: any of them)."
    ),
]
OperatorOption = Annotated[
    str | None,
    typer.Option(
        "--by", help="Your name, kept in the audit trail (default: cli:<your login name>)."
    ),
]


def _operator(by: str | None) -> str:
    return by or f"cli:{getpass.getuser()}"


def parse_duration(text: str) -> timedelta:
    """`2h`, `30m`, `1d`, `1h30m` as a duration; `typer.BadParameter` otherwise."""
    found = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or found is None or not any(found.groups()):
        raise typer.BadParameter(f"{text!r} is not a duration such as 30m, 2h, 1h30m or 1d")
    days, hours, minutes = (int(part or 0) for part in found.groups())
    duration = timedelta(days=days, hours=hours, minutes=minutes)
    if duration <= timedelta(0):
        raise typer.BadParameter("the duration must be longer than 0")
    return duration


@alerts_app.command("list")
def alerts_list(
    department: DepartmentFilter = None,
    severity: Annotated[
        list[AlertSeverity] | None,
        typer.Option("--severity", "-s", help="critical, high, medium or low (repeatable)."),
    ] = None,
    status: Annotated[
        list[AlertStatus] | None,
        typer.Option(help="active, acknowledged or resolved (default: active and acknowledged)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=500, help="At most this many, newest first.")
    ] = 100,
    db: DbOption = None,
) -> None:
    """List the alerts, newest first: the open ones unless --status says otherwise.

    Reads the alerts table as the page shows it (every department); changes nothing. Times
    are in the hospital's time zone (LIVEDASH_TIMEZONE).

    Example: livedash alerts list -d ED -s critical -s high
    """
    from livedash.alerts.commands import run_list_alerts

    settings = settings_for(db)
    migrate_database(settings)
    alerts = explained(
        run_list_alerts(
            settings,
            departments=department or (),
            severities=severity or (),
            statuses=status or (),
            limit=limit,
        )
    )
    if not alerts:
        console.print("No alerts match.")
        return
    table = Table()
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("severity", no_wrap=True)
    table.add_column("department", no_wrap=True)
    table.add_column("rule", overflow="fold")
    table.add_column("title", overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("status", overflow="fold")
    table.add_column(f"raised ({settings.timezone})", no_wrap=True)
    for alert in alerts:
        value = "" if alert.value is None else f"{alert.value:g}"
        if alert.threshold is not None:
            value += f" / {alert.threshold:g}"
        status_text = alert.status
        if alert.acknowledged_by:
            status_text += f" by {alert.acknowledged_by}"
        style = _SEVERITY_STYLE.get(alert.severity, "")
        table.add_row(
            str(alert.id),
            f"[{style}]{alert.severity}[/{style}]" if style else alert.severity,
            alert.department or "hospital",
            escape(alert.rule or ""),
            escape(alert.title),
            value,
            escape(status_text),
            f"{alert.raised_at.astimezone(settings.zone):%Y-%m-%d %H:%M}",
        )
    Console().print(table)


@alerts_app.command("silence")
def alerts_silence(
    duration: Annotated[
        str, typer.Option("--for", help="How long: 30m, 2h, 1h30m, 1d (at most 31 days).")
    ],
    reason: Annotated[str, typer.Option(help="Why, kept with the silence (shown on the page).")],
    rule: Annotated[str | None, typer.Option(help="Only alerts of this rule.")] = None,
    department: Annotated[
        str | None, typer.Option("--department", "-d", help="Only this department, or `hospital`.")
    ] = None,
    severity: Annotated[
        AlertSeverity | None, typer.Option("--severity", "-s", help="Only this severity.")
    ] = None,
    by: OperatorOption = None,
    db: DbOption = None,
) -> None:
    """Silence alerts for a while: hold back their e-mails, pushes and escalation.

    Matching alerts are still raised, stored and shown on the page: a silence mutes, it
    never hides. Give at least one of --rule, --department, --severity (all given must
    match). Writes a row of alert_silences with your name (--by) for the audit trail; every
    instance honours it at once. End it early with `livedash alerts unsilence ID`.

    Example: livedash alerts silence --rule department-full -d ED --for 2h --reason "ward refit"
    """
    from livedash.alerts.commands import run_silence
    from livedash.alerts.silences import SilenceRequest

    length = parse_duration(duration)
    if not reason.strip():
        raise typer.BadParameter(
            "give a reason: it is kept with the silence", param_hint="--reason"
        )
    settings = settings_for(db)
    try:
        request = SilenceRequest(
            rule=rule,
            department=department,
            severity=severity,
            ends_at=datetime.now(UTC) + length,
            comment=reason.strip(),
        )
    except ValidationError as error:
        problems = "; ".join(
            str(problem["msg"]).removeprefix("Value error, ") for problem in error.errors()
        )
        raise typer.BadParameter(problems) from None
    migrate_database(settings)
    silence = explained(run_silence(settings, request, _operator(by)))
    console.print(
        f"Silence {silence.id} ({_matchers(silence.rule, silence.department, silence.severity)}) "
        f"until {silence.ends_at.astimezone(settings.zone):%Y-%m-%d %H:%M} "
        f"({settings.timezone}), by {silence.created_by}.",
        soft_wrap=True,
    )


@alerts_app.command("silences")
def alerts_silences(db: DbOption = None) -> None:
    """List the silences not yet over: what they match, until when, who made them and why.

    Example: livedash alerts silences
    """
    from livedash.alerts.commands import run_list_silences

    settings = settings_for(db)
    migrate_database(settings)
    silences = explained(run_list_silences(settings))
    if not silences:
        console.print("No silences.")
        return
    table = Table()
    for heading in ("id", "matches", f"from ({settings.timezone})", "until", "by", "reason"):
        table.add_column(heading, overflow="fold")
    for silence in silences:
        table.add_row(
            str(silence.id),
            escape(_matchers(silence.rule, silence.department, silence.severity)),
            f"{silence.starts_at.astimezone(settings.zone):%Y-%m-%d %H:%M}",
            f"{silence.ends_at.astimezone(settings.zone):%Y-%m-%d %H:%M}",
            escape(silence.created_by),
            escape(silence.comment or ""),
        )
    Console().print(table)


@alerts_app.command("unsilence")
def alerts_unsilence(
    silence: Annotated[int, typer.Argument(help="The silence's id (`livedash alerts silences`).")],
    by: OperatorOption = None,
    db: DbOption = None,
) -> None:
    """End a silence now: notifications of matching alerts go out again.

    Example: livedash alerts unsilence 12
    """
    from livedash.alerts.commands import run_end_silence

    settings = settings_for(db)
    migrate_database(settings)
    ended = explained(run_end_silence(settings, silence, _operator(by)))
    console.print(f"Silence {ended.id} ended by {ended.ended_by}.")


def _matchers(rule: str | None, department: str | None, severity: AlertSeverity | None) -> str:
    parts = [
        f"{name} {value}"
        for name, value in (
            ("rule", rule),
            ("department", department),
            ("severity", severity.value if severity else None),
        )
        if value is not None
    ]
    return ", ".join(parts)
