"""Escalation, silences and mute timings on the running service, on a controlled clock.

An unacknowledged HIGH alert tells the department's admins after the rule's delay, then the
super_admins; an acknowledgement stops that until it expires. A silence or a mute timing
holds back every notification of the alerts it matches, but never hides the alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from livedash.metrics.clock import ManualClock
from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.alerting import bearer, set_beds, with_rules
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import services_of
from tests.support.writers import Write

RULES = """
rules:
  - name: beds-busy
    metric: beds_occupied
    scope: each_department
    condition: above
    threshold: 1
    severity: high
    escalate_after: 10m
mute_timings:
  - name: night-maintenance
    department: CARD
    start: "02:00"
    end: "03:00"
"""


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(hour=10, minute=0))


@pytest.fixture
async def alerting(
    serve: Serve, settings: Settings, tmp_path: Path, clock: ManualClock
) -> LiveServer:
    return await serve(with_rules(settings, tmp_path, RULES), clock)


async def _occupy(writer: Write, hospital: dict[str, int], department: str) -> None:
    await set_beds(writer, hospital, (f"{department}-1A", f"{department}-1B"), "occupied")


async def test_an_unacknowledged_alert_tells_the_admins_then_the_super_admins(
    hospital: dict[str, int],
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
    clock: ManualClock,
) -> None:
    admin = await connect(alerting, token(Role.ADMIN, ("ED",), sub="ed-admin"))
    viewer = await connect(alerting, token(Role.VIEWER, ("ED",), sub="ed-viewer"))
    chief = await connect(alerting, token(Role.SUPER_ADMIN, sub="chief"))
    await _occupy(writer, hospital, "ED")
    raised = await admin.next("alert", lambda a: a["state"] == "firing")
    for screen in (admin, viewer, chief):
        assert (await screen.next("notification"))["event"] == "raised"
    alerts = services_of(alerting).alerts

    clock.advance(timedelta(minutes=9, seconds=59))
    await alerts.tick()
    assert admin.received("alert")[-1]["escalation_level"] == 0

    clock.advance(timedelta(seconds=1))
    await alerts.tick()
    told = await admin.next("notification", lambda n: n["event"] == "escalated")
    assert told["alert_id"] == raised["id"]
    assert (await viewer.next("alert", lambda a: a["escalation_level"] == 1))["id"] == raised["id"]
    assert [n["event"] for n in viewer.received("notification")] == ["raised"]
    assert [n["event"] for n in chief.received("notification")] == ["raised"]

    clock.advance(timedelta(minutes=10))
    await alerts.tick()
    assert (await chief.next("notification", lambda n: n["event"] == "escalated"))[
        "alert_id"
    ] == raised["id"]
    assert [n["event"] for n in admin.received("notification")] == ["raised", "escalated"]


async def test_an_acknowledgement_holds_escalation_back_until_it_expires(
    hospital: dict[str, int],
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
    clock: ManualClock,
) -> None:
    admin_token = token(Role.ADMIN, ("ED",), sub="ed-admin")
    admin = await connect(alerting, admin_token)
    await _occupy(writer, hospital, "ED")
    raised = await admin.next("alert", lambda a: a["state"] == "firing")
    await admin.next("notification", lambda n: n["event"] == "raised")
    alerts = services_of(alerting).alerts
    until = clock.now() + timedelta(minutes=30)
    async with httpx.AsyncClient(base_url=alerting.url) as http:
        acknowledged = await http.post(
            f"/api/alerts/{raised['id']}/acknowledge",
            headers=bearer(admin_token),
            json={"until": until.isoformat()},
        )
        assert acknowledged.status_code == 200, acknowledged.text

    clock.advance(timedelta(minutes=10))
    await alerts.tick()  # acknowledged: nobody is told
    clock.advance(timedelta(minutes=29))  # 39 min: the acknowledgement ran out 9 min ago
    await alerts.tick()
    assert [n["event"] for n in admin.received("notification")] == ["raised"]
    clock.advance(timedelta(minutes=1))  # ten minutes unacknowledged again
    await alerts.tick()
    told = await admin.next("notification", lambda n: n["event"] == "escalated")
    assert told["alert_id"] == raised["id"]


async def test_a_silence_and_a_mute_timing_hold_back_notifications_not_the_alert(
    hospital: dict[str, int],
    settings: Settings,
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
    clock: ManualClock,
) -> None:
    admin_token = token(Role.ADMIN, ("ED",), sub="ed-admin")
    viewer_token = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    chief = await connect(alerting, token(Role.SUPER_ADMIN, sub="chief"))
    async with httpx.AsyncClient(base_url=alerting.url) as http:
        refused = await http.post(
            "/api/alerts/silences",
            headers=bearer(viewer_token),
            json={"department": "ED", "ends_at": (clock.now() + timedelta(hours=1)).isoformat()},
        )
        assert refused.status_code == 403
        hidden = await http.post(
            "/api/alerts/silences",
            headers=bearer(admin_token),
            json={"department": "CARD", "ends_at": (clock.now() + timedelta(hours=1)).isoformat()},
        )
        assert hidden.status_code == 422
        assert "'CARD' is not one you may see" in hidden.json()["detail"]
        no_matcher = await http.post(
            "/api/alerts/silences",
            headers=bearer(admin_token),
            json={"ends_at": (clock.now() + timedelta(hours=1)).isoformat()},
        )
        assert no_matcher.status_code == 422
        assert "at least one matcher" in no_matcher.json()["detail"]
        made = await http.post(
            "/api/alerts/silences",
            headers=bearer(admin_token),
            json={
                "rule": "beds-busy",
                "department": "ED",
                "ends_at": (clock.now() + timedelta(hours=1)).isoformat(),
                "comment": "ward refit",
            },
        )
        assert made.status_code == 200, made.text
        silence = made.json()
        listed = (await http.get("/api/alerts/silences", headers=bearer(viewer_token))).json()
        assert [s["id"] for s in listed["items"]] == [silence["id"]]

        await _occupy(writer, hospital, "ED")
        raised = await chief.next("alert", lambda a: a["department"] == "ED")
        assert raised["state"] == "firing"  # shown
        # A later alert that is not silenced notifies: everything before it was held back.
        ended = await http.post(
            f"/api/alerts/silences/{silence['id']}/end", headers=bearer(admin_token)
        )
        assert ended.status_code == 200
    local = clock.now().astimezone(settings.zone)
    clock.set(local.replace(hour=2, minute=30))  # in CARD's nightly mute timing
    await _occupy(writer, hospital, "CARD")
    muted = await chief.next("alert", lambda a: a["department"] == "CARD")
    # Out of the window, CARD's next alert notifies; neither the silenced ED alert nor the
    # muted CARD one (dispatched before it) notified anyone.
    clock.set(local.replace(hour=3, minute=0))
    await set_beds(writer, hospital, ("CARD-1A", "CARD-1B"), "free")
    await chief.next("alert", lambda a: a["department"] == "CARD" and a["status"] == "resolved")
    await _occupy(writer, hospital, "CARD")
    later = await chief.next(
        "alert", lambda a: a["department"] == "CARD" and a["id"] != muted["id"]
    )
    told = await chief.next("notification")
    assert told["alert_id"] == later["id"]
    assert [n["alert_id"] for n in chief.received("notification")] == [later["id"]]
