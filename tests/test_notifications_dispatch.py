"""In-app notifications of alerts: who gets one, at once on their sockets and in their
history; preferences decide, and nobody sees another user's notifications."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.alerting import bearer, set_beds, with_rules
from tests.support.live import Connect, LiveServer, Serve
from tests.support.push_service import Browser
from tests.support.writers import Write


@pytest.fixture
async def alerting(serve: Serve, settings: Settings, tmp_path: Path) -> LiveServer:
    return await serve(with_rules(settings, tmp_path))


async def _occupy(writer: Write, hospital: dict[str, int], status: str) -> None:
    await set_beds(writer, hospital, ("ED-1A", "ED-1B"), status)


async def test_an_alert_notifies_the_users_who_may_see_it_at_once_and_in_their_history(
    hospital: dict[str, int],
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    viewer_token = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    card_token = token(Role.VIEWER, ("CARD",), sub="card-viewer")
    ed_viewer = await connect(alerting, viewer_token)
    card_viewer = await connect(alerting, card_token)
    chief = await connect(alerting, token(Role.SUPER_ADMIN, sub="chief"))

    await _occupy(writer, hospital, "occupied")

    told = await ed_viewer.next("notification")
    assert told["event"] == "raised"
    assert told["severity"] == "high"
    assert told["title"] == "More than one bed occupied"
    assert told["department"] == "ED"
    assert told["read"] is False
    assert (await chief.next("notification"))["alert_id"] == told["alert_id"]

    async with httpx.AsyncClient(base_url=alerting.url) as http:
        mine = (await http.get("/api/notifications", headers=bearer(viewer_token))).json()
        assert mine["unread"] == 1
        assert [item["id"] for item in mine["items"]] == [told["id"]]
        theirs = (await http.get("/api/notifications", headers=bearer(card_token))).json()
        assert theirs == {"unread": 0, "items": [], "next": None}
        # Marking another user's notification read changes nothing.
        other = await http.post(f"/api/notifications/{told['id']}/read", headers=bearer(card_token))
        assert other.json() == {"marked": 0}
        read = await http.post(
            f"/api/notifications/{told['id']}/read", headers=bearer(viewer_token)
        )
        assert read.json() == {"marked": 1}
        mine = (await http.get("/api/notifications", headers=bearer(viewer_token))).json()
        assert mine["unread"] == 0
        assert mine["items"][0]["read"] is True

    await _occupy(writer, hospital, "free")
    assert (await ed_viewer.next("notification", lambda n: n["event"] == "resolved"))[
        "alert_id"
    ] == told["alert_id"]
    assert card_viewer.received("notification") == []


async def test_preferences_choose_the_severities_and_are_validated(
    hospital: dict[str, int],
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    picky_token = token(Role.VIEWER, ("ED",), sub="picky")
    picky = await connect(alerting, picky_token)
    chief = await connect(alerting, token(Role.SUPER_ADMIN, sub="chief"))
    async with httpx.AsyncClient(base_url=alerting.url) as http:
        defaults = (
            await http.get("/api/notifications/preferences", headers=bearer(picky_token))
        ).json()
        assert defaults["channels"] == ["in_app"]
        assert defaults["min_severity"] == "medium"
        chosen = {**defaults, "min_severity": "critical", "quiet_from": "22:00"}
        refused = await http.put(
            "/api/notifications/preferences", headers=bearer(picky_token), json=chosen
        )
        assert refused.status_code == 422
        assert "quiet_from and quiet_until go together" in refused.json()["detail"]
        hidden = {**defaults, "departments": ["CARD"]}
        refused = await http.put(
            "/api/notifications/preferences", headers=bearer(picky_token), json=hidden
        )
        assert refused.status_code == 422
        assert "'CARD' is not a department you may see" in refused.json()["detail"]
        chosen = {**defaults, "min_severity": "critical"}
        saved = await http.put(
            "/api/notifications/preferences", headers=bearer(picky_token), json=chosen
        )
        assert saved.status_code == 200, saved.text
        again = (
            await http.get("/api/notifications/preferences", headers=bearer(picky_token))
        ).json()
        assert again["min_severity"] == "critical"

    await _occupy(writer, hospital, "occupied")
    # The chief's notification shows the alert was raised and dispatched; the HIGH alert
    # is below what `picky` chose.
    await chief.next("notification")
    assert picky.received("notification") == []
    await picky.next("alert", lambda a: a["state"] == "firing")  # the alert itself is shown


async def test_a_browser_registers_for_push_only_through_a_known_push_service(
    alerting: LiveServer, token: Any
) -> None:
    user = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    browser = Browser()
    async with httpx.AsyncClient(base_url=alerting.url) as http:

        async def register(endpoint: str) -> httpx.Response:
            return await http.post(
                "/api/notifications/push/subscriptions",
                headers=bearer(user),
                json=browser.subscription_json(endpoint),
            )

        inside = await register("https://intranet.hospital.test/admin")
        assert inside.status_code == 422
        assert "'intranet.hospital.test' is not a push service" in inside.json()["detail"]
        plain = await register("http://fcm.googleapis.com/fcm/send/abc")
        assert plain.status_code == 422
        assert "https" in plain.json()["detail"]
        known = await register("https://fcm.googleapis.com/fcm/send/abc")
        assert known.status_code == 200, known.text
        again = await register("https://fcm.googleapis.com/fcm/send/abc")
        assert again.json()["id"] == known.json()["id"]  # one per device
        # The same browser signed up by another user becomes a new subscription: the first
        # user's pushes still queued never reach it.
        other = token(Role.VIEWER, ("CARD",), sub="card-viewer")
        taken = await http.post(
            "/api/notifications/push/subscriptions",
            headers=bearer(other),
            json=browser.subscription_json("https://fcm.googleapis.com/fcm/send/abc"),
        )
        theirs = taken.json()["id"]
        mine = await http.delete(
            f"/api/notifications/push/subscriptions/{theirs}", headers=bearer(user)
        )
        assert mine.json() == {"marked": 0}  # no longer the first user's to remove
        known = await register("https://fcm.googleapis.com/fcm/send/abc")
        apple = await register("https://web.push.apple.com/QGuQyav")
        assert apple.status_code == 200
        gone = await http.delete(
            f"/api/notifications/push/subscriptions/{known.json()['id']}", headers=bearer(user)
        )
        assert gone.json() == {"marked": 1}


async def test_a_resolution_that_follows_at_once_is_still_told_after_the_raising(
    hospital: dict[str, int],
    alerting: LiveServer,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    viewer = await connect(alerting, token(Role.VIEWER, ("ED",), sub="ed-viewer"))
    for _ in range(3):
        await _occupy(writer, hospital, "occupied")
        raised = await viewer.next("alert", lambda a: a["state"] == "firing")
        alert_id = raised["id"]
        await _occupy(writer, hospital, "free")  # while the raising is being notified
        resolved = await viewer.next(
            "notification",
            lambda n, alert_id=alert_id: n["event"] == "resolved" and n["alert_id"] == alert_id,
        )
        events = [
            n["event"] for n in viewer.received("notification") if n["alert_id"] == raised["id"]
        ]
        assert events == ["raised", "resolved"]
        assert resolved["alert_id"] == raised["id"]
