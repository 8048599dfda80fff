"""Anomaly rules on the running service: an unusual hour raises one alert with its expected
band, pushed to the screens and notified; the next usual hour resolves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import services_of
from tests.support.writers import Write

RULES = """
rules: []
anomaly_rules:
  - name: admissions-unusual
    series: admissions
    scope: hospital
    severity: medium
    min_history: 2
    history_weeks: 3
"""


@pytest.fixture
async def watching(serve: Serve, settings: Settings, tmp_path: Path) -> LiveServer:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return await serve(settings.model_copy(update={"alert_rules_file": rules}))


async def _admissions(writer: Write, hour: datetime, amount: int) -> None:
    stored = hour.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    await writer(
        "INSERT INTO metric_rollups (series, department_id, hour_start, amount, weighted, "
        "seconds, peak) VALUES ('admissions', 0, ?, ?, 0, 0, NULL)",
        (stored, amount),
    )


async def test_an_unusual_hour_raises_one_alert_with_its_band_and_a_usual_one_resolves_it(
    hospital: dict[str, int],
    watching: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
    settings: Settings,
) -> None:
    zone = ZoneInfo(settings.timezone)
    chief = await connect(watching, token(Role.SUPER_ADMIN, sub="chief"))
    hour = datetime(2026, 11, 30, 11, tzinfo=zone)  # a Monday, 11:00
    for weeks, amount in ((3, 5), (2, 6), (1, 5)):
        await _admissions(writer, hour - timedelta(weeks=weeks), amount)
        await _admissions(writer, hour + timedelta(hours=1) - timedelta(weeks=weeks), amount)
    await _admissions(writer, hour, 40)
    await _admissions(writer, hour + timedelta(hours=1), 5)
    anomalies = services_of(watching).anomalies

    await anomalies.assess_hour(hour)
    raised = await chief.next("alert", lambda a: a["rule"] == "admissions-unusual")
    assert raised["state"] == "firing"
    assert raised["severity"] == "medium"
    assert raised["value"] == 40
    assert raised["department"] is None
    assert raised["band_low"] < raised["expected"] < raised["band_high"] < 40
    assert raised["threshold"] == raised["band_high"]
    told = await chief.next("notification", lambda n: n["alert_id"] == raised["id"])
    assert told["event"] == "raised"

    await anomalies.assess_hour(hour)  # the same hour again (a restart): the same alert
    await anomalies.assess_hour(hour + timedelta(hours=1))
    resolved = await chief.next("alert", lambda a: a["status"] == "resolved")
    assert resolved["id"] == raised["id"]
    ids = {alert["id"] for alert in chief.received("alert")}
    assert ids == {raised["id"]}
