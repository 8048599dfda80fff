"""Report schedules as they run on a clock the test moves: once per run with two instances,
the misfire policy after a stop, a daily run across the spring clock change, a failing run
retried, shown and alerted on until it succeeds, and retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
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
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import services_of
from tests.support.prometheus import scrape
from tests.support.report_oracle import feed_applied, patient_screen
from tests.support.report_schedules import (
    create_schedule,
    reporting,
    schedule_of,
)
from tests.support.rest import problem_of, walk
from tests.support.writers import register_patient

NOW = datetime(2026, 11, 25, 5, 10, tzinfo=UTC)  # a Wednesday, 06:10 in Berlin
ZONE = ZoneInfo("Europe/Berlin")
FAILING = "livedash_report_schedules_failing"
RUNS = "livedash_report_schedule_runs_total"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def chief(token: Any) -> str:
    return str(token(Role.SUPER_ADMIN, sub="chief"))


async def tick(server: LiveServer, *, starting: bool = False) -> None:
    """Run what is due on `server` now, as its scheduler's loop does."""
    await services_of(server).report_scheduler.tick(starting=starting)


async def scheduled_reports(server: LiveServer, token: str) -> list[dict[str, Any]]:
    """Every report schedules made, oldest first."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        reports = await walk(http, "/api/reports", bearer(token), {"limit": 200})
    return [r for r in reversed(reports) if r["schedule_id"] is not None]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_two_instances_run_each_scheduled_report_once(
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
    clock: ManualClock,
    hospital: dict[str, int],
    chief: str,
) -> None:
    configured = reporting(settings, tmp_path)
    instances = [await serve(configured, clock), await serve(configured, clock)]
    async with httpx.AsyncClient(base_url=instances[0].url) as http:
        schedule = await create_schedule(http, chief, cron="@hourly", format="json")
    runs = [at(schedule["next_run_at"]) + timedelta(hours=n) for n in range(4)]

    for run in runs:
        clock.set(run)
        # Both instances see the run due at the same moment and race for it.
        await asyncio.gather(*(tick(instance) for instance in instances))

    reports = await scheduled_reports(instances[1], chief)
    assert [at(r["parameters"]["run_at"]) for r in reports] == runs
    assert {r["status"] for r in reports} == {"done"}
    assert sum(services_of(i).report_scheduler.runs for i in instances) == len(runs)
    async with httpx.AsyncClient(base_url=instances[1].url) as http:
        final = await schedule_of(http, chief, schedule["id"])
    assert final["last_report_id"] == reports[-1]["id"]
    assert at(final["next_run_at"]) == runs[-1] + timedelta(hours=1)


async def test_runs_missed_while_down_run_once_at_start_or_are_skipped(
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
    clock: ManualClock,
    hospital: dict[str, int],
    chief: str,
) -> None:
    configured = reporting(settings, tmp_path)
    before = await serve(configured, clock)
    async with httpx.AsyncClient(base_url=before.url) as http:
        once = await create_schedule(http, chief, name="once", cron="@hourly", format="json")
        skip = await create_schedule(
            http, chief, name="skip", cron="@hourly", misfire="skip", format="json"
        )
        # 11:08 in Berlin: missed by 2 minutes when the service is back, within the grace.
        just = await create_schedule(
            http, chief, name="just", cron="8 11 * * *", misfire="skip", format="json"
        )
    await before.stop()
    clock.advance(timedelta(hours=5))  # down from 06:10 to 11:10 in Berlin: 5 hourly runs

    after = await serve(configured, clock)
    await tick(after, starting=True)

    reports = await scheduled_reports(after, chief)
    ran = {(r["schedule_id"], at(r["parameters"]["run_at"])) for r in reports}
    assert ran == {
        (once["id"], datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),  # the latest, and only it
        (just["id"], datetime(2026, 11, 25, 10, 8, tzinfo=UTC)),
    }
    latest = next(r for r in reports if r["schedule_id"] == once["id"])
    assert (at(latest["period_start"]), at(latest["period_end"])) == (
        datetime(2026, 11, 25, 9, 0, tzinfo=UTC),
        datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    )
    scraped = await scrape(after.url)
    assert scraped.value("livedash_report_schedule_runs_total", result="skipped") == 5
    async with httpx.AsyncClient(base_url=after.url) as http:
        for schedule in (once, skip):
            moved = await schedule_of(http, chief, schedule["id"])
            assert at(moved["next_run_at"]) == datetime(2026, 11, 25, 11, 0, tzinfo=UTC)

    # Back to normal: the next run of each runs on time.
    clock.set(datetime(2026, 11, 25, 11, 0, tzinfo=UTC))
    await tick(after)
    later = await scheduled_reports(after, chief)
    assert [(r["schedule_id"], at(r["parameters"]["run_at"])) for r in later[len(reports) :]] == [
        (once["id"], clock.now()),
        (skip["id"], clock.now()),
    ]


async def test_a_daily_0230_run_happens_once_on_the_day_the_clocks_skip_it(
    serve: Serve, settings: Settings, tmp_path: Path, hospital: dict[str, int], chief: str
) -> None:
    clock = ManualClock(datetime(2026, 3, 28, 11, 0, tzinfo=UTC))  # Saturday noon in Berlin
    server = await serve(reporting(settings, tmp_path), clock)
    async with httpx.AsyncClient(base_url=server.url) as http:
        schedule = await create_schedule(http, chief, cron="30 2 * * *", format="json")
    # On Sunday 29 March the clocks go from 02:00 to 03:00: 02:30 runs when the gap ends.
    assert at(schedule["next_run_at"]) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)

    while clock.now() < datetime(2026, 3, 30, 2, 0, tzinfo=UTC):  # Monday 04:00 in Berlin
        clock.advance(timedelta(minutes=15))
        await tick(server)

    reports = await scheduled_reports(server, chief)
    runs = [at(r["parameters"]["run_at"]) for r in reports]
    assert [run.astimezone(ZONE).isoformat() for run in runs] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    periods = [(at(r["period_start"]), at(r["period_end"]), r["period_label"]) for r in reports]
    # Each run reports on the local day before its own, the one of the change lasting 23 h.
    assert periods == [
        (
            datetime(2026, 3, 28, tzinfo=ZONE),
            datetime(2026, 3, 29, tzinfo=ZONE),
            "2026-03-28",
        ),
        (
            datetime(2026, 3, 29, tzinfo=ZONE),
            datetime(2026, 3, 30, tzinfo=ZONE),
            "2026-03-29",
        ),
    ]
    assert periods[1][1] - periods[1][0] == timedelta(hours=23)


@pytest.mark.both_backends
async def test_a_failing_run_is_retried_shown_and_alerted_on_until_it_succeeds(
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
    clock: ManualClock,
    hospital: dict[str, int],
    chief: str,
    connect: Connect,
) -> None:
    blocked = tmp_path / "reports"
    blocked.write_text("a file where the reports' directory should be\n")
    server = await serve(
        # The default alert rules (alert_rules_file unset), which hold report-run-failed.
        reporting(
            settings, tmp_path, report_dir=blocked, alert_rules_file=None, report_retry_seconds=60
        ),
        clock,
    )
    screen = await connect(server, chief)
    async with httpx.AsyncClient(base_url=server.url) as http:
        schedule = await create_schedule(http, chief, format="json")  # 07:00 in Berlin
        run = at(schedule["next_run_at"])

        clock.set(run)
        await tick(server)
        failed = await schedule_of(http, chief, schedule["id"])
        assert failed["failures"] == 1
        assert failed["last_error"].startswith("cannot write the report")
        assert at(failed["retry_at"]) == run + timedelta(seconds=60)
        assert at(failed["retry_of"]) == run
        report = (
            await http.get(f"/api/reports/{failed['last_report_id']}", headers=bearer(chief))
        ).json()
        assert (report["status"], report["error"]) == ("failed", failed["last_error"])
        scraped = await scrape(server.url)
        assert (scraped.value(FAILING), scraped.value(RUNS, result="failed")) == (1, 1)
        raised = await screen.next(
            "alert", lambda a: a["rule"] == "report-run-failed" and a["state"] == "firing"
        )
        assert (raised["department"], raised["severity"], raised["value"]) == (None, "high", 1)

        clock.set(at(failed["retry_at"]))
        await tick(server)
        again = await schedule_of(http, chief, schedule["id"])
        assert again["failures"] == 2
        assert at(again["retry_at"]) == clock.now() + timedelta(seconds=120)  # doubled
        assert at(again["retry_of"]) == run
        assert again["next_run_at"] == failed["next_run_at"]  # tomorrow's run is unchanged

        blocked.unlink()  # the disk is fixed
        clock.set(at(again["retry_at"]))
        await tick(server)
        recovered = await schedule_of(http, chief, schedule["id"])
        assert (recovered["failures"], recovered["last_error"], recovered["retry_at"]) == (
            0,
            None,
            None,
        )
        done = (
            await http.get(f"/api/reports/{recovered['last_report_id']}", headers=bearer(chief))
        ).json()
        assert done["status"] == "done"
        assert at(done["parameters"]["run_at"]) == run  # the retry made the 07:00 report
        scraped = await scrape(server.url)
        assert (scraped.value(FAILING), scraped.value(RUNS, result="failed")) == (0, 2)
        resolved = await screen.next(
            "alert", lambda a: a["rule"] == "report-run-failed" and a["status"] == "resolved"
        )
        assert resolved["id"] == raised["id"]


async def test_each_run_is_retried_even_after_the_last_one_spent_its_attempts(
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
    clock: ManualClock,
    hospital: dict[str, int],
    chief: str,
) -> None:
    blocked = tmp_path / "reports"
    blocked.write_text("not a directory\n")
    configured = reporting(
        settings, tmp_path, report_dir=blocked, report_max_attempts=2, report_retry_seconds=60
    )
    server = await serve(configured, clock)
    async with httpx.AsyncClient(base_url=server.url) as http:
        schedule = await create_schedule(http, chief, format="json")
        clock.set(at(schedule["next_run_at"]))
        await tick(server)
        clock.advance(timedelta(seconds=60))
        await tick(server)
        spent = await schedule_of(http, chief, schedule["id"])
        assert (spent["failures"], spent["retry_at"]) == (2, None)  # no third attempt

        clock.set(at(spent["next_run_at"]))  # the next day's run fails too
        await tick(server)
        next_day = await schedule_of(http, chief, schedule["id"])
        assert next_day["failures"] == 1
        assert at(next_day["retry_at"]) == clock.now() + timedelta(seconds=60)


async def test_old_reports_are_removed_by_type(
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
    clock: ManualClock,
    hospital: dict[str, int],
    chief: str,
) -> None:
    configured = reporting(
        settings, tmp_path, report_retention_days={"occupancy": 7, "default": 90}
    )
    server = await serve(configured, clock)
    reports = services_of(server).reports
    made: dict[str, int] = {}
    for report_type in ("occupancy", "admissions"):
        period = resolve_period("yesterday", zone=ZONE, now=clock.now())
        request = ReportRequest(report_type, await reports.scope(None), period, "json", "chief")
        info = await reports.generate(request)
        assert info.status == "done", info.error
        made[report_type] = info.id
    files = {kind: configured.report_dir / f"report-{ident}.json" for kind, ident in made.items()}
    assert all(file.exists() for file in files.values())

    clock.advance(timedelta(days=8))  # past the occupancy reports' 7 days
    await tick(server)

    async with httpx.AsyncClient(base_url=server.url) as http:
        gone = await http.get(f"/api/reports/{made['occupancy']}", headers=bearer(chief))
        problem_of(gone, 404, "unknown_report")
        still = await http.get(f"/api/reports/{made['admissions']}", headers=bearer(chief))
        assert still.status_code == 200
    assert not files["occupancy"].exists()
    assert files["admissions"].exists()


async def test_a_run_waits_for_the_feed_to_settle_and_includes_the_last_second(
    serve: Serve,
    settings: Settings,
    tmp_path: Path,
    clock: ManualClock,
    hospital: dict[str, int],
    chief: str,
    writer: Any,
    connect: Connect,
    token: Any,
    database_url: str,
) -> None:
    server = await serve(reporting(settings, tmp_path, report_settle_seconds=30.0), clock)
    screen = await patient_screen(connect, server, token)
    async with httpx.AsyncClient(base_url=server.url) as http:
        schedule = await create_schedule(
            http, chief, cron="@hourly", format="json", report_type="revenue"
        )
    run = at(schedule["next_run_at"])
    last_second = (run - timedelta(milliseconds=100)).replace(tzinfo=None)
    await writer(
        "INSERT INTO payments (bill_id, department_id, amount_cents, paid_at) VALUES (1, ?, ?, ?)",
        (hospital["ED"], 4_200, last_second.isoformat(sep=" ")),
    )
    await register_patient(writer, hospital["ED"], "written after the payment")
    await feed_applied(database_url, screen)
    clock.set(run + timedelta(seconds=29))
    await tick(server)
    assert await scheduled_reports(server, chief) == []  # not yet: the feed may lag
    clock.set(run + timedelta(seconds=30))
    await tick(server)
    (report,) = await scheduled_reports(server, chief)
    assert report["status"] == "done"
    async with httpx.AsyncClient(base_url=server.url) as http:
        download = await http.get(f"/api/reports/{report['id']}/download", headers=bearer(chief))
    assert download.json()["figures"][0] == {
        "key": "revenue",
        "title": "Revenue",
        "kind": "money",
        "value": "42.00",
    }
