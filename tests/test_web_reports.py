"""/api/reports: a report queued, polled and downloaded, every refusal as problem details, lists
paged and filtered within the caller's scope, schedules managed by role, and verification."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from livedash.metrics.clock import ManualClock
from livedash.reports.generation import ReportRequest
from livedash.reports.periods import resolve_period
from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.alerting import bearer
from tests.support.live import LiveServer, Serve
from tests.support.probes import services_of
from tests.support.report_schedules import (
    create_schedule,
    finished,
    reporting,
    schedule_body,
    schedule_of,
)
from tests.support.rest import problem_of, walk

NOW = datetime(2026, 11, 25, 5, 10, tzinfo=UTC)  # a Wednesday, 06:10 in Berlin
ZONE = ZoneInfo("Europe/Berlin")
YESTERDAY = {"type": "occupancy", "period": "yesterday"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def server(
    serve: Serve, settings: Settings, tmp_path: Path, clock: ManualClock, hospital: dict[str, int]
) -> LiveServer:
    return await serve(reporting(settings, tmp_path), clock)


@pytest.fixture
def chief(token: Any) -> dict[str, str]:
    return bearer(token(Role.SUPER_ADMIN, sub="chief"))


@pytest.fixture
def card_admin(token: Any) -> dict[str, str]:
    return bearer(token(Role.ADMIN, ("CARD",), sub="card-admin"))


async def made(
    server: LiveServer, report_type: str, department: str | None, status: str = "done"
) -> int:
    """A report of yesterday as JSON, generated (`done`), `failed` or left `queued`."""
    reports = services_of(server).reports
    period = resolve_period("yesterday", zone=ZONE, now=NOW)
    request = ReportRequest(report_type, await reports.scope(department), period, "json", "someone")
    if status == "done":
        info = await reports.generate(request)
        assert info.status == "done", info.error
        return info.id
    info = await reports.archive.open(request, NOW, generator="test", schedule_id=None)
    if status == "failed":
        await reports.archive.fail(info.id, "the disk is full", NOW)
    return info.id


async def test_a_report_is_queued_polled_and_downloaded(
    server: LiveServer, chief: dict[str, str], card_admin: dict[str, str]
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for headers, body, media_type, name in (
            (
                chief,
                {"type": "occupancy", "period": "yesterday", "format": "pdf"},
                "application/pdf",
                "occupancy-hospital-2026-11-24.pdf",
            ),
            (
                card_admin,
                {
                    "type": "admissions",
                    "department": "CARD",
                    "period": "last-week",
                    "format": "csv",
                },
                "text/csv; charset=utf-8",
                "admissions-CARD-2026-W47__2026-11-16_to_2026-11-22_.csv",
            ),
            (
                card_admin,
                {"type": "revenue", "department": "CARD", "from": "2026-11-01", "to": "2026-11-25"},
                "application/pdf",
                "revenue-CARD-2026-11-01_to_2026-11-24.pdf",
            ),
        ):
            queued = await http.post("/api/reports", headers=headers, json=body)
            assert queued.status_code == 202, queued.text
            location = queued.headers["location"]
            assert location == f"/api/reports/{queued.json()['id']}"
            assert queued.json()["status"] in ("queued", "running")

            report = await finished(http, location, headers)
            assert report["status"] == "done", report["error"]
            assert report["department"] == body.get("department")
            download = await http.get(f"{location}/download", headers=headers)
            assert download.status_code == 200
            assert download.headers["content-type"] == media_type
            assert download.headers["content-disposition"] == f'attachment; filename="{name}"'
            digest = hashlib.sha256(download.content).hexdigest()
            assert digest == download.headers["x-content-sha256"] == report["sha256"]
            assert len(download.content) == report["size"]


async def test_every_refusal_is_a_problem_with_its_code(
    server: LiveServer, chief: dict[str, str], card_admin: dict[str, str], token: Any
) -> None:
    card_viewer = bearer(token(Role.VIEWER, ("CARD",), sub="card-viewer"))
    ed_report = await made(server, "occupancy", "ED")
    queued = await made(server, "occupancy", "CARD", status="queued")
    failed = await made(server, "occupancy", "CARD", status="failed")
    refused: list[tuple[dict[str, str], dict[str, Any], int, str, str]] = [
        (chief, {"type": "beds", "period": "yesterday"}, 422, "invalid_payload", "type"),
        (
            chief,
            {"type": "occupancy", "from": "2026-11-20", "to": "2026-11-20"},
            422,
            "invalid_payload",
            "must come before",
        ),
        (
            chief,
            {"type": "occupancy", "from": "2026-11-20", "to": "2026-11-10"},
            422,
            "invalid_payload",
            "must come before",
        ),
        (
            chief,
            {"type": "occupancy", "from": "2025-01-01", "to": "2026-11-01"},
            422,
            "invalid_payload",
            "at most 400 days",
        ),
        (chief, {"type": "occupancy", "period": "fortnight"}, 422, "invalid_payload", "unknown"),
        (chief, {**YESTERDAY, "period": "day:2026-12-01"}, 422, "invalid_payload", "future"),
        (chief, {"type": "occupancy"}, 422, "invalid_payload", "a period is needed"),
        (chief, {**YESTERDAY, "department": "XRAY"}, 404, "unknown_department", "no department"),
        (card_admin, {**YESTERDAY, "department": "ED"}, 403, "forbidden", "ED"),
        (card_admin, YESTERDAY, 403, "forbidden", "hospital"),
        (card_viewer, YESTERDAY, 403, "forbidden", "hospital"),
    ]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for headers, body, status, code, detail in refused:
            answer = await http.post("/api/reports", headers=headers, json=body)
            assert detail in problem_of(answer, status, code).detail, body
        problem_of(await http.post("/api/reports", json={"type": "occupancy"}), 401)

        for ident, state in ((queued, "queued"), (failed, "failed")):
            early = await http.get(f"/api/reports/{ident}/download", headers=card_admin)
            assert state in problem_of(early, 409, "report_not_ready").detail
        for path in ("", "/download"):
            unknown = await http.get(f"/api/reports/999999{path}", headers=chief)
            problem_of(unknown, 404, "unknown_report")
            # Another department's report is as unknown as one that does not exist.
            hidden = await http.get(f"/api/reports/{ed_report}{path}", headers=card_admin)
            problem_of(hidden, 404, "unknown_report")
        problem_of(
            await http.post(f"/api/reports/{ed_report}/verify", headers=card_admin),
            404,
            "unknown_report",
        )


@pytest.mark.both_backends
async def test_lists_are_paged_filtered_and_kept_to_the_callers_scope(
    server: LiveServer, chief: dict[str, str], card_admin: dict[str, str]
) -> None:
    ids: dict[tuple[str, str | None, str], int] = {}
    for report_type in ("occupancy", "admissions"):
        for department in (None, "ED", "CARD"):
            ids[report_type, department, "done"] = await made(server, report_type, department)
    ids["alerts", "CARD", "failed"] = await made(server, "alerts", "CARD", "failed")
    ids["alerts", None, "queued"] = await made(server, "alerts", None, "queued")

    def expected(**wanted: Any) -> list[int]:
        keys = ("type", "department", "status")
        return sorted(
            (
                ident
                for key, ident in ids.items()
                if all(wanted.get(k, value) == value for k, value in zip(keys, key, strict=True))
            ),
            reverse=True,
        )

    async with httpx.AsyncClient(base_url=server.url) as http:

        async def listed(headers: dict[str, str], **params: Any) -> list[int]:
            items = await walk(http, "/api/reports", headers, {"limit": 2, **params})
            return [item["id"] for item in items]

        assert await listed(chief) == expected()
        assert await listed(chief, type="admissions") == expected(type="admissions")
        assert await listed(chief, department="hospital") == expected(department=None)
        assert await listed(chief, department="ED", type="occupancy") == expected(
            department="ED", type="occupancy"
        )
        assert await listed(chief, status="failed") == expected(status="failed")
        assert await listed(chief, status="queued") == expected(status="queued")
        # A department's admin sees that department's reports and nothing else.
        assert await listed(card_admin) == expected(department="CARD")
        assert await listed(card_admin, status="done") == expected(department="CARD", status="done")
        for department in ("ED", "hospital"):
            other = await http.get(
                "/api/reports", headers=card_admin, params={"department": department}
            )
            problem_of(other, 403, "forbidden")
        for params in ({"type": "beds"}, {"status": "lost"}, {"limit": 0}, {"cursor": "x"}):
            problem_of(
                await http.get("/api/reports", headers=chief, params=params), 422, "invalid_payload"
            )


@pytest.mark.both_backends
async def test_schedules_are_managed_by_admins_within_their_departments(
    server: LiveServer,
    clock: ManualClock,
    chief: dict[str, str],
    card_admin: dict[str, str],
    token: Any,
) -> None:
    viewer = token(Role.VIEWER, ("CARD",), sub="card-viewer")
    card_token = card_admin["Authorization"].removeprefix("Bearer ")
    chief_token = chief["Authorization"].removeprefix("Bearer ")
    scheduler = services_of(server).report_scheduler
    async with httpx.AsyncClient(base_url=server.url) as http:
        for method, path in (
            ("GET", "/api/reports/schedules"),
            ("POST", "/api/reports/schedules"),
        ):
            body = schedule_body(department="CARD") if method == "POST" else None
            refused = await http.request(method, path, headers=bearer(viewer), json=body)
            problem_of(refused, 403, "forbidden")
        hospital_wide = await http.post(
            "/api/reports/schedules",
            headers=card_admin,
            json={"name": "everything", "report_type": "occupancy", "cron": "@daily"},
        )
        problem_of(hospital_wide, 403, "forbidden")
        unmailed = await http.post(
            "/api/reports/schedules",
            headers=chief,
            json=schedule_body(recipients=["chief"]),
        )
        refusal = problem_of(unmailed, 422, "invalid_payload")
        assert "e-mail is not configured" in refusal.detail

        card = await create_schedule(http, card_token, department="CARD", format="json")
        assert (card["created_by"], card["paused"], card["failures"]) == ("card-admin", False, 0)
        assert datetime.fromisoformat(card["next_run_at"]) == datetime(2026, 11, 25, 6, tzinfo=UTC)
        ed = await create_schedule(http, chief_token, department="ED", format="json")
        whole = await create_schedule(http, chief_token, format="json")

        chiefs = await walk(http, "/api/reports/schedules", chief, {"limit": 1})
        assert [s["id"] for s in chiefs] == [card["id"], ed["id"], whole["id"]]
        mine = await walk(http, "/api/reports/schedules", card_admin, {"limit": 1})
        assert [s["id"] for s in mine] == [card["id"]]
        for action in ("", "/pause", "/resume"):
            method = "GET" if action == "" else "POST"
            hidden = await http.request(
                method, f"/api/reports/schedules/{ed['id']}{action}", headers=card_admin
            )
            problem_of(hidden, 404, "unknown_report")
        problem_of(
            await http.delete(f"/api/reports/schedules/{ed['id']}", headers=card_admin),
            404,
            "unknown_report",
        )

        paused = await http.post(f"/api/reports/schedules/{card['id']}/pause", headers=card_admin)
        assert paused.status_code == 200
        assert paused.json()["paused"] is True
        clock.set(datetime(2026, 11, 26, 8, tzinfo=UTC))  # past two 07:00 runs
        await scheduler.tick()
        assert (await schedule_of(http, card_token, card["id"]))["last_run_at"] is None
        resumed = await http.post(f"/api/reports/schedules/{card['id']}/resume", headers=card_admin)
        assert resumed.json()["paused"] is False
        # From now on: the runs missed while paused are not made up.
        assert datetime.fromisoformat(resumed.json()["next_run_at"]) == datetime(
            2026, 11, 27, 6, tzinfo=UTC
        )

        # The ED schedule ran meanwhile (the chief's tick above); deleting it keeps its reports.
        ran = await schedule_of(http, chief_token, ed["id"])
        assert ran["last_report_id"] is not None
        deleted = await http.delete(f"/api/reports/schedules/{ed['id']}", headers=chief)
        assert deleted.status_code == 204, deleted.text
        problem_of(
            await http.get(f"/api/reports/schedules/{ed['id']}", headers=chief),
            404,
            "unknown_report",
        )
        kept = await http.get(f"/api/reports/{ran['last_report_id']}", headers=chief)
        assert kept.status_code == 200
        assert kept.json()["parameters"]["schedule"] == ed["id"]
        left = await walk(http, "/api/reports/schedules", chief)
        assert [s["id"] for s in left] == [card["id"], whole["id"]]


async def test_a_report_is_verified_against_the_figures_now(
    server: LiveServer, chief: dict[str, str], card_admin: dict[str, str]
) -> None:
    ident = await made(server, "admissions", "CARD")
    async with httpx.AsyncClient(base_url=server.url) as http:
        report = (await http.get(f"/api/reports/{ident}", headers=card_admin)).json()
        verified = await http.post(f"/api/reports/{ident}/verify", headers=card_admin)
    assert verified.status_code == 200, verified.text
    assert verified.json() == {
        "report": ident,
        "same": True,
        "reason": "the same figures",
        "feed_position_then": report["feed_position"],
        "feed_position_now": report["feed_position"],
    }
