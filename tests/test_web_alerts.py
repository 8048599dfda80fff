"""/api/alerts: what an administrator does with an alert, and what others may not do."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.alerting import bearer, set_beds, with_rules
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import services_of
from tests.support.rest import problem_of
from tests.support.writers import Write


@pytest.fixture
async def alerting(serve: Serve, settings: Settings, tmp_path: Path) -> LiveServer:
    return await serve(with_rules(settings, tmp_path))


async def test_an_admin_acknowledges_and_resolves_what_others_may_not_touch(
    hospital: dict[str, int],
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    ed_admin = token(Role.ADMIN, ("ED",), sub="ed-admin")
    ed_viewer = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    card_admin = token(Role.ADMIN, ("CARD",), sub="card-admin")
    screen = await connect(alerting, ed_viewer)
    await set_beds(writer, hospital, ("ED-1A", "ED-1B"), "occupied")
    raised = await screen.next("alert", lambda a: a["state"] == "firing")
    alert_id = raised["id"]

    async with httpx.AsyncClient(base_url=alerting.url) as http:
        listed = (await http.get("/api/alerts", headers=bearer(ed_admin))).json()
        assert [alert["id"] for alert in listed["items"]] == [alert_id]
        none = (await http.get("/api/alerts", headers=bearer(card_admin))).json()
        assert none == {"items": [], "next": None}

        refused = await http.post(f"/api/alerts/{alert_id}/acknowledge", headers=bearer(ed_viewer))
        problem_of(refused, 403, "forbidden")
        hidden = await http.post(f"/api/alerts/{alert_id}/resolve", headers=bearer(card_admin))
        problem_of(hidden, 404, "unknown_alert")
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        stale = await http.post(
            f"/api/alerts/{alert_id}/acknowledge", headers=bearer(ed_admin), json={"until": past}
        )
        assert "until" in problem_of(stale, 422, "invalid_payload").detail
        naive = await http.post(
            f"/api/alerts/{alert_id}/acknowledge",
            headers=bearer(ed_admin),
            json={"until": "2030-01-01T18:00:00"},  # no offset: which 18:00?
        )
        assert "until" in problem_of(naive, 422, "invalid_payload").detail

        until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        acknowledged = await http.post(
            f"/api/alerts/{alert_id}/acknowledge",
            headers=bearer(ed_admin),
            json={"note": "porters on their way", "until": until.isoformat()},
        )
        assert acknowledged.status_code == 200, acknowledged.text
        body = acknowledged.json()
        assert body["status"] == "acknowledged"
        assert body["acknowledged_by"] == "ed-admin"
        assert body["acknowledgement_note"] == "porters on their way"
        assert datetime.fromisoformat(body["acknowledged_until"]) == until
        pushed = await screen.next("alert", lambda a: a["status"] == "acknowledged")
        assert pushed["acknowledged_by"] == "ed-admin"

        resolved = await http.post(f"/api/alerts/{alert_id}/resolve", headers=bearer(ed_admin))
        assert resolved.status_code == 200
        assert resolved.json()["resolved_by"] == "ed-admin"
        assert (await screen.next("alert", lambda a: a["status"] == "resolved"))["id"] == alert_id
        # Those told of it hear it ended, by hand as when it clears.
        ended = await screen.next("notification", lambda n: n["event"] == "resolved")
        assert ended["alert_id"] == alert_id
        again = await http.post(f"/api/alerts/{alert_id}/resolve", headers=bearer(ed_admin))
        assert "resolved already" in problem_of(again, 422, "invalid_payload").detail
        open_ones = (await http.get("/api/alerts", headers=bearer(ed_admin))).json()
        assert open_ones["items"] == []
        history = await http.get(
            "/api/alerts", headers=bearer(ed_admin), params={"status": "resolved"}
        )
        assert [alert["status"] for alert in history.json()["items"]] == ["resolved"]
        unknown = await http.post("/api/alerts/999999/resolve", headers=bearer(ed_admin))
        problem_of(unknown, 404, "unknown_alert")


async def test_a_super_admin_replaces_the_rules_and_every_mistake_is_named(
    hospital: dict[str, int],
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    chief_token = token(Role.SUPER_ADMIN, sub="chief")
    admin_token = token(Role.ADMIN, ("ED",), sub="ed-admin")
    viewer_token = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    chief = await connect(alerting, chief_token)
    stricter = {
        "rules": [
            {
                "name": "ed-crowded",
                "metric": "beds_occupied",
                "scope": "ED",
                "condition": "above",
                "threshold": 2,
                "severity": "critical",
                "for": "0s",
            }
        ]
    }
    async with httpx.AsyncClient(base_url=alerting.url) as http:
        in_force = (await http.get("/api/alerts/rules", headers=bearer(admin_token))).json()
        assert in_force["version"] == 0
        assert [rule["name"] for rule in in_force["document"]["rules"]] == ["beds-busy"]
        assert (
            await http.get("/api/alerts/rules", headers=bearer(viewer_token))
        ).status_code == 403
        refused = await http.put("/api/alerts/rules", headers=bearer(admin_token), json=stricter)
        assert refused.status_code == 403
        wrong = {"rules": [{**stricter["rules"][0], "metric": "beds_flying"}]}
        invalid = await http.put("/api/alerts/rules", headers=bearer(chief_token), json=wrong)
        assert invalid.status_code == 422
        assert "rule 1 ('ed-crowded'): metric: Value error, unknown metric" in invalid.text
        unknown = await http.put(
            "/api/alerts/rules", headers=bearer(chief_token), json={"rulez": []}
        )
        assert "rulez: not a section" in problem_of(unknown, 422, "invalid_payload").detail
        assert (await http.get("/api/alerts/rules", headers=bearer(chief_token))).json()[
            "version"
        ] == 0  # nothing changed

        saved = await http.put("/api/alerts/rules", headers=bearer(chief_token), json=stricter)
        assert saved.status_code == 200, saved.text
        assert saved.json()["version"] == 1
        alerts = services_of(alerting).alerts

        async def applied() -> bool:
            return "ed-crowded" in alerts.rules

        async with asyncio.timeout(10):
            while not await applied():  # noqa: ASYNC110 - the leader applies it on its own
                await asyncio.sleep(0.02)

        await set_beds(writer, hospital, ("ED-1A", "ED-1B"), "occupied")  # 2: not above 2
        await set_beds(writer, hospital, ("ED-2A",), "occupied")
        raised = await chief.next("alert", lambda a: a["state"] == "firing")
        assert (raised["rule"], raised["severity"]) == ("ed-crowded", "critical")
        assert [a["rule"] for a in chief.received("alert")] == ["ed-crowded"]

        back = await http.delete("/api/alerts/rules", headers=bearer(chief_token))
        assert back.json()["version"] == 0
