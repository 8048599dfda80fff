"""The dashboard over REST: the values, series, scope and limits of the sockets, and the sockets
themselves counted, on one instance and across instances sharing Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.recorder import update_of
from livedash.testing.servers import RedisServer
from tests.support.alerting import bearer
from tests.support.live import Connect, LiveServer, Serve
from tests.support.rest import problem_of
from tests.support.writers import Write, register_patient

CRITICAL, STANDARD = "patients_waiting", "appointments_today"
Keyed = dict[tuple[str, str | None], tuple[Any, int]]


def keyed(values: list[dict[str, Any]]) -> Keyed:
    """Snapshot values by (metric, department): (value, version)."""
    return {(v["metric"], v["department"]): (v["value"], v["version"]) for v in values}


def day_by_hour(settings: Settings, department: str | None) -> dict[str, Any]:
    """A `request_historical` of yesterday's admissions, by hour (24 hours of budget)."""
    start = datetime.now(settings.zone).replace(hour=0, minute=0, second=0, microsecond=0)
    start -= timedelta(days=1)
    asked = {"metric": "admissions", "from": start.isoformat()}
    return {**asked, "to": (start + timedelta(days=1)).isoformat(), "department": department}


async def test_the_snapshot_over_rest_is_the_one_a_socket_gets(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for caller, scopes in (
            (token(), {None, "ED", "CARD"}),
            (token(Role.ADMIN, ("ED",), sub="ed-admin"), {"ED"}),  # no hospital-wide totals
        ):
            screen = await connect(server, caller)
            over_socket = keyed((await screen.call("request_snapshot"))["values"])
            answer = await http.get("/api/snapshot", headers=bearer(caller))
            assert answer.status_code == 200, answer.text
            over_rest = keyed(answer.json()["values"])
            assert over_rest == over_socket
            assert {department for _, department in over_rest} == scopes
            assert all("position" not in value for value in answer.json()["values"])

        one = await http.get(
            "/api/departments/ED/snapshot",
            headers=bearer(token()),
            params={"metrics": [CRITICAL, STANDARD]},
        )
        assert set(keyed(one.json()["values"])) == {(CRITICAL, "ED"), (STANDARD, "ED")}
        same = await http.get(
            "/api/snapshot",
            headers=bearer(token()),
            params={"department": "ED", "metrics": CRITICAL},
        )
        assert keyed(same.json()["values"]).keys() == {(CRITICAL, "ED")}
        totals = await http.get("/api/departments/hospital/snapshot", headers=bearer(token()))
        assert {department for _, department in keyed(totals.json()["values"])} == {None}


async def test_a_socket_takes_up_from_a_snapshots_position(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.get(
            "/api/departments/ED/snapshot", headers=bearer(token()), params={"metrics": CRITICAL}
        )
    snapshot = answer.json()
    [(waiting, _)] = keyed(snapshot["values"]).values()
    assert snapshot["position"] is not None
    await register_patient(writer, hospital["ED"], "walk-in")

    screen = await connect(server, token())
    subscribed = await screen.call(
        "subscribe_metrics",
        {"metrics": [CRITICAL], "departments": ["ED"], "since": snapshot["position"]},
    )
    assert subscribed["recovered"] is True  # what came after the snapshot, replayed or live
    await screen.next("dashboard_update", update_of(CRITICAL, "ED", waiting + 1))


async def test_a_department_admin_reads_only_their_departments(
    hospital: dict[str, int], server: LiveServer, token: Any, settings: Settings
) -> None:
    ed_admin = bearer(token(Role.ADMIN, ("ED",), sub="ed-admin"))
    chief = bearer(token())
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path, params in (
            ("/api/departments/CARD/snapshot", {}),
            ("/api/departments/hospital/snapshot", {}),
            ("/api/snapshot", {"department": "CARD"}),
            ("/api/departments/NOWHERE/snapshot", {}),  # not told whether it exists
            ("/api/history", day_by_hour(settings, "CARD")),
            ("/api/history", {**day_by_hour(settings, None), "department": "hospital"}),
        ):
            refused = await http.get(path, headers=ed_admin, params=params)
            problem_of(refused, 403, "forbidden")
        mine = await http.get("/api/history", headers=ed_admin, params=day_by_hour(settings, "ED"))
        assert mine.status_code == 200, mine.text
        assert [
            d["code"]
            for d in (await http.get("/api/departments", headers=ed_admin)).json()["items"]
        ] == ["ED"]

        unknown = await http.get("/api/departments/NOWHERE/snapshot", headers=chief)
        problem_of(unknown, 404, "unknown_department")
        series = {**day_by_hour(settings, None), "department": "NOWHERE"}
        problem_of(await http.get("/api/history", headers=chief, params=series), 404)
        metric = await http.get("/api/snapshot", headers=chief, params={"metrics": "bed_count"})
        problem_of(metric, 404, "unknown_metric")


async def test_history_over_rest_is_the_sockets_with_its_checks_and_budget(
    hospital: dict[str, int], serve: Serve, connect: Connect, token: Any, settings: Settings
) -> None:
    budget = {
        "rate_limit_history_hours": "60/minute",
        "rate_limit_history_hours_per_socket": "0/minute",
    }
    server = await serve(settings.model_copy(update=budget))
    caller = token(Role.ADMIN, ("ED",), sub="ed-admin")
    screen = await connect(server, caller)
    asked = day_by_hour(settings, "ED")
    async with httpx.AsyncClient(base_url=server.url) as http:
        backwards = {**asked, "from": asked["to"], "to": asked["from"]}
        refused = await http.get("/api/history", headers=bearer(caller), params=backwards)
        told = (await screen.call("request_historical", backwards))["message"]
        assert problem_of(refused, 422, "invalid_payload").detail == told

        over_rest = await http.get("/api/history", headers=bearer(caller), params=asked)
        assert over_rest.status_code == 200, over_rest.text
        assert len(over_rest.json()["points"]) == 24
        assert over_rest.json() == await screen.call("request_historical", asked)

        # 24 + 24 hours of the 60 are spent, by REST and the socket alike.
        spent = await http.get("/api/history", headers=bearer(caller), params=asked)
        assert problem_of(spent, 429, "rate_limited").retry_after is not None
        assert (await screen.call("request_historical", asked))["code"] == "rate_limited"


async def _stats(
    http: httpx.AsyncClient,
    server: LiveServer,
    caller: str,
    until: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, Any]:
    """`server`'s realtime stats, once `until` holds of them (instances report every few
    seconds, and a socket's disconnect takes a moment to be noticed)."""
    async with asyncio.timeout(15):
        while True:
            answer = await http.get(f"{server.url}/api/realtime/stats", headers=bearer(caller))
            assert answer.status_code == 200, answer.text
            stats: dict[str, Any] = answer.json()
            if until(stats):
                return stats
            await asyncio.sleep(0.1)


async def test_realtime_stats_count_the_sockets_connected(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any
) -> None:
    chief = token()
    first = await connect(server, chief)
    await first.call(
        "subscribe_metrics", {"metrics": [CRITICAL, STANDARD], "departments": ["ED", "CARD"]}
    )
    viewer_token = token(Role.VIEWER, ("ED",), sub="ed-viewer")
    second = await connect(server, viewer_token)
    await second.call("subscribe_metrics", {"metrics": [CRITICAL]})
    await connect(server)  # not signed in (yet)

    async with httpx.AsyncClient() as http:
        stats = await _stats(http, server, chief)
        here = stats["instance"]
        counts = {k: here[k] for k in ("connections", "authenticated", "transports")}
        assert counts == {"connections": 3, "authenticated": 2, "transports": 3}
        assert here["tiers"] == {
            "critical": {"subscribers": 2, "subscriptions": 3},
            "standard": {"subscribers": 1, "subscriptions": 2},
            "historical": {"subscribers": 0, "subscriptions": 0},
        }
        deployment = stats["deployment"]
        assert deployment["complete"] is True
        assert deployment["instances"] == [
            here | {"reported_at": deployment["instances"][0]["reported_at"]}
        ]
        assert (deployment["connections"], deployment["tiers"]) == (3, here["tiers"])

        await first.call("unsubscribe_metrics", {"metrics": [STANDARD]})
        await second.client.disconnect()
        after = await _stats(http, server, chief, lambda s: s["instance"]["connections"] == 2)
        assert after["instance"]["tiers"]["critical"] == {"subscribers": 1, "subscriptions": 2}
        assert after["instance"]["tiers"]["standard"] == {"subscribers": 0, "subscriptions": 0}

        refused = await http.get(f"{server.url}/api/realtime/stats", headers=bearer(viewer_token))
        problem_of(refused, 403, "forbidden")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_the_deployment_counts_the_sockets_of_every_instance(
    hospital: dict[str, int],
    serve: Serve,
    connect: Connect,
    token: Any,
    redis_server: RedisServer,
) -> None:
    first, second = await serve(), await serve()
    chief = token()
    await connect(first, chief)
    for _ in range(2):
        screen = await connect(second, chief)
        await screen.call("subscribe_metrics", {"metrics": [CRITICAL], "departments": ["ED"]})

    async with httpx.AsyncClient() as http:
        for asked in (first, second):
            stats = await _stats(
                http,
                asked,
                chief,
                lambda s: (
                    len(s["deployment"]["instances"]) == 2 and s["deployment"]["connections"] == 3
                ),
            )
            deployment = stats["deployment"]
            assert deployment["complete"] is True
            assert deployment["tiers"]["critical"] == {"subscribers": 2, "subscriptions": 2}
            assert sorted(i["connections"] for i in deployment["instances"]) == [1, 2]
        assert stats["instance"]["connections"] == 2  # the second's own

        await second.stop()  # it takes its report with it
        alone = await _stats(http, first, chief, lambda s: len(s["deployment"]["instances"]) == 1)
        assert alone["deployment"]["connections"] == alone["instance"]["connections"] == 1

        redis_server.kill()  # the others' reports are out of reach: this instance, and says so
        cut_off = await _stats(http, first, chief, lambda s: not s["deployment"]["complete"])
        assert [i["connections"] for i in cut_off["deployment"]["instances"]] == [1]
