"""Rules evaluated on the running service: a breach written by the hospital's application
raises one alert, stored and pushed to the screens that may see its department, and its
recovery resolves it. Real server, real database, real Socket.IO clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from livedash.settings import Settings
from livedash.store.engine import create_engine
from livedash.store.models import Role
from tests.support.alerting import with_rules
from tests.support.live import Connect, LiveServer, Serve
from tests.support.writers import Write


@pytest.fixture
def alert_settings(settings: Settings, tmp_path: Path) -> Settings:
    return with_rules(settings, tmp_path)


@pytest.fixture
async def alerting(serve: Serve, alert_settings: Settings) -> LiveServer:
    return await serve(alert_settings)


async def _stored(settings: Settings) -> list[Any]:
    database = create_engine(settings.database_url)
    try:
        async with database.connect() as connection:
            return list(
                (
                    await connection.execute(
                        text(
                            "SELECT rule, severity, status, state, department_id, resolved_at "
                            "FROM alerts ORDER BY id"
                        )
                    )
                ).all()
            )
    finally:
        await database.dispose()


async def test_a_breach_raises_one_alert_for_the_departments_screens_and_recovery_resolves_it(
    hospital: dict[str, int],
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
    settings: Settings,
) -> None:
    ed_admin = await connect(alerting, token(Role.ADMIN, ("ED",), sub="ed-admin"))
    card_viewer = await connect(alerting, token(Role.VIEWER, ("CARD",), sub="card-viewer"))
    chief = await connect(alerting, token(Role.SUPER_ADMIN, sub="chief"))
    await ed_admin.call("subscribe_metrics", {"metrics": ["alerts_active_high"]})

    for bed in ("ED-1A", "ED-1B", "ED-2A"):
        await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital[bed],))

    raised = await ed_admin.next("alert", lambda a: a["state"] == "firing")
    assert raised["rule"] == "beds-busy"
    assert raised["department"] == "ED"
    assert raised["severity"] == "high"
    assert raised["status"] == "active"
    assert raised["title"] == "More than one bed occupied"
    assert raised["value"] in (2, 3)  # the feed may deliver the last two writes together
    assert raised["threshold"] == 1
    assert (await chief.next("alert", lambda a: a["state"] == "firing"))["id"] == raised["id"]
    counted = await ed_admin.next(
        "dashboard_update", lambda u: u["metric"] == "alerts_active_high" and u["value"] == 1
    )
    assert counted["department"] == "ED"

    # A third bed is the same lasting condition: no second alert.
    for bed in ("ED-1A", "ED-1B", "ED-2A"):
        await writer("UPDATE beds SET status = 'free' WHERE id = ?", (hospital[bed],))
    resolved = await ed_admin.next("alert", lambda a: a["status"] == "resolved")
    assert resolved["id"] == raised["id"]
    assert resolved["state"] == "normal"
    await ed_admin.next(
        "dashboard_update", lambda u: u["metric"] == "alerts_active_high" and u["value"] == 0
    )

    stored = await _stored(settings)
    assert [tuple(row[:5]) for row in stored] == [
        ("beds-busy", "high", "resolved", "normal", hospital["ED"])
    ]
    assert stored[0][5] is not None
    # Cardiology's viewer may not see the emergency department: nothing of it arrived.
    assert card_viewer.received("alert") == []


async def test_an_alert_open_at_a_restart_stays_one_alert_and_is_resolved_after_it(
    hospital: dict[str, int],
    serve: Serve,
    alert_settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    first = await serve(alert_settings)
    screen = await connect(first, token(Role.ADMIN, ("ED",), sub="ed-admin"))
    for bed in ("ED-1A", "ED-1B"):
        await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital[bed],))
    raised = await screen.next("alert", lambda a: a["state"] == "firing")
    await first.stop()

    second = await serve(alert_settings)
    screen = await connect(second, token(Role.ADMIN, ("ED",), sub="ed-admin"))
    await writer("UPDATE beds SET status = 'occupied' WHERE id = ?", (hospital["ED-2A"],))
    for bed in ("ED-1A", "ED-1B", "ED-2A"):
        await writer("UPDATE beds SET status = 'free' WHERE id = ?", (hospital[bed],))
    resolved = await screen.next("alert", lambda a: a["status"] == "resolved")
    assert resolved["id"] == raised["id"]
    assert [alert["id"] for alert in screen.received("alert")] == [raised["id"]]
    stored = await _stored(alert_settings)
    assert [row[2] for row in stored] == ["resolved"]
