"""Every REST list comes in pages: walked by `next` and the `Link` header, each row once, while
rows keep arriving; filtered lists, and their scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from livedash.metrics.definitions import METRICS
from livedash.store.models import Role
from livedash.web.pagination import encode_cursor
from tests.support.alerting import bearer
from tests.support.live import LiveServer
from tests.support.rest import problem_of, walk
from tests.support.writers import Write

START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
SEVERITIES = ("critical", "high", "medium", "low")


def stored(moment: datetime) -> str:
    """A time as livedash stores it (SQLite compares the text: the microseconds count)."""
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


async def _alert(
    writer: Write,
    department: int | None,
    number: int,
    *,
    status: str = "active",
    rule: str = "beds-busy",
) -> int:
    raised = stored(START + timedelta(minutes=number))
    return await writer(
        "INSERT INTO alerts (department_id, severity, status, title, raised_at, rule) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (department, SEVERITIES[number % 4], status, f"alert {number}", raised, rule),
    )


async def test_alerts_are_walked_page_by_page_each_once_while_new_ones_arrive(
    hospital: dict[str, int], server: LiveServer, token: Any, writer: Write
) -> None:
    departments = (hospital["ED"], hospital["CARD"], None)
    ids: dict[int | None, list[int]] = {department: [] for department in departments}
    for number in range(24):
        department = departments[number % 3]
        ids[department].append(await _alert(writer, department, number))
    existing = sorted((i for listed in ids.values() for i in listed), reverse=True)
    arrived: list[int] = []

    async def more(_page: int) -> None:
        arrived.append(await _alert(writer, hospital["ED"], 100 + len(arrived)))

    chief, ed_admin = bearer(token()), bearer(token(Role.ADMIN, ("ED",), sub="ed-admin"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        everything = await walk(http, "/api/alerts", chief, {"limit": 5}, between=more)
        # Newest first, every row that was there once; those that came meanwhile not at all.
        assert [a["id"] for a in everything] == existing
        assert len(arrived) == 4  # after each of the first four pages of five
        ed_then = sorted(ids[hospital["ED"]] + arrived, reverse=True)
        ed_only = await walk(http, "/api/alerts", ed_admin, {"limit": 3}, between=more)
        assert [a["id"] for a in ed_only] == ed_then
        assert len(arrived) == 4 + 3  # the twelve of them in four pages of three
        assert {a["department"] for a in ed_only} == {"ED"}


async def test_alert_filters_each_narrow_the_list_and_keep_to_the_callers_scope(
    hospital: dict[str, int], server: LiveServer, token: Any, writer: Write
) -> None:
    ed, card = hospital["ED"], hospital["CARD"]
    resolved = await _alert(writer, ed, 0, status="resolved")
    acknowledged = await _alert(writer, ed, 1, status="acknowledged", rule="queue")
    active_card = await _alert(writer, card, 2)
    hospital_wide = await _alert(writer, None, 3, rule="queue")
    chief = bearer(token())
    ed_admin = bearer(token(Role.ADMIN, ("ED",), sub="ed-admin"))

    async with httpx.AsyncClient(base_url=server.url) as http:

        async def ids(headers: dict[str, str], **params: Any) -> list[int]:
            return [a["id"] for a in await walk(http, "/api/alerts", headers, params)]

        assert await ids(chief) == [hospital_wide, active_card, acknowledged]  # open ones
        assert await ids(chief, status="resolved") == [resolved]
        assert await ids(chief, status=["resolved", "acknowledged"]) == [acknowledged, resolved]
        assert await ids(chief, severity="medium") == [active_card]
        assert await ids(chief, department="hospital") == [hospital_wide]
        assert await ids(chief, department=["ED", "CARD"]) == [active_card, acknowledged]
        assert await ids(chief, rule="queue") == [hospital_wide, acknowledged]
        since, until = START + timedelta(minutes=1), START + timedelta(minutes=3)
        window = {"since": since.isoformat(), "until": until.isoformat(), "status": "active"}
        assert await ids(chief, **window) == [active_card]
        assert await ids(ed_admin) == [acknowledged]

        for department in ("CARD", "hospital", "NOWHERE"):
            outside = await http.get(
                "/api/alerts", headers=ed_admin, params={"department": department}
            )
            problem_of(outside, 403, "forbidden")
        unknown = await http.get("/api/alerts", headers=chief, params={"department": "NOWHERE"})
        problem_of(unknown, 404, "unknown_department")
        naive = await http.get("/api/alerts", headers=chief, params={"since": "2026-11-20T08:00"})
        problem_of(naive, 422, "invalid_payload")


async def test_notifications_come_in_pages_with_the_unread_count(
    hospital: dict[str, int], server: LiveServer, token: Any, writer: Write
) -> None:
    async def notify(user: str, number: int, *, read: bool = False) -> int:
        created = stored(START + timedelta(minutes=number))
        return await writer(
            "INSERT INTO notifications (username, event, severity, title, created_at, read_at, "
            "idempotency_key) VALUES (?, 'raised', 'high', ?, ?, ?, ?)",
            (user, f"n{number}", created, created if read else None, f"{user}:{number}"),
        )

    mine = [await notify("ann", n, read=n % 2 == 0) for n in range(11)]
    await notify("bob", 11)
    ann = bearer(token(Role.VIEWER, ("ED",), sub="ann"))
    unread_counts: list[int] = []
    async with httpx.AsyncClient(base_url=server.url) as http:

        async def arrive(page: int) -> None:
            await notify("ann", 100 + page)
            unread_counts.append(
                (await http.get("/api/notifications", headers=ann)).json()["unread"]
            )

        listed = await walk(http, "/api/notifications", ann, {"limit": 4}, between=arrive)
        assert [n["id"] for n in listed] == sorted(mine, reverse=True)
        assert unread_counts == [6, 7]  # every unread one of the user's, not of the page
        unread = await walk(http, "/api/notifications", ann, {"limit": 2, "unread_only": "true"})
        assert all(not n["read"] for n in unread)
        assert len(unread) == 7


async def test_silences_metrics_and_departments_come_in_pages(
    hospital: dict[str, int], server: LiveServer, token: Any, writer: Write
) -> None:
    for number in range(5):
        await writer("INSERT INTO departments (code, name) VALUES (?, ?)", (f"W{number}", "Ward"))
    starts = datetime.now(UTC).replace(tzinfo=None)
    silences = [
        await writer(
            "INSERT INTO alert_silences (created_by, created_at, starts_at, ends_at, department) "
            "VALUES ('chief', ?, ?, ?, ?)",
            (starts, starts, starts + timedelta(hours=1), department),
        )
        for department in ("ED", "CARD", "ED", "W1", None)
    ]
    chief = bearer(token())
    ed_admin = bearer(token(Role.ADMIN, ("ED", "W3"), sub="ed-admin"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        listed = await walk(http, "/api/alerts/silences", chief, {"limit": 2})
        assert [s["id"] for s in listed] == sorted(silences, reverse=True)
        theirs = await walk(http, "/api/alerts/silences", ed_admin, {"limit": 1})
        assert [s["id"] for s in theirs] == [silences[2], silences[0]]

        metrics = await walk(http, "/api/metrics", chief, {"limit": 7})
        assert [m["name"] for m in metrics] == list(METRICS)

        departments = await walk(http, "/api/departments", chief, {"limit": 2})
        codes = ["CARD", "ED", "W0", "W1", "W2", "W3", "W4"]
        assert [d["code"] for d in departments] == codes
        assert departments[1] == {"code": "ED", "name": "Emergency"}
        seen = await walk(http, "/api/departments", ed_admin, {"limit": 1})
        assert [d["code"] for d in seen] == ["ED", "W3"]


async def test_limits_and_cursors_are_checked(server: LiveServer, token: Any) -> None:
    chief = bearer(token())
    async with httpx.AsyncClient(base_url=server.url) as http:
        for params in ({"limit": 0}, {"limit": 201}, {"cursor": "not a cursor"}):
            refused = await http.get("/api/metrics", headers=chief, params=params)
            problem_of(refused, 422, "invalid_payload")
        # A cursor of another list's kind (a department code where an id is due).
        other = await http.get("/api/alerts", headers=chief, params={"cursor": encode_cursor("ED")})
        assert problem_of(other, 422, "invalid_payload").detail.startswith("cursor:")
        last = await http.get("/api/metrics", headers=chief, params={"limit": 200})
        assert last.json()["next"] is None
        assert "link" not in last.headers
