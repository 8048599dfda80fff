"""Hypothesis sends arbitrary JSON to every incoming event, over a real server and client.

How it is driven: ONE live server and ONE socket.io client (an admin of ED; the hospital has
ED and CARD) serve every example, since starting a server per example would cost seconds
each. They run on the test's event loop, where the usual function-scoped async fixtures made
them. Hypothesis is synchronous and forbids `.example()` inside tests, so the `@given`
function runs in a worker thread (`asyncio.to_thread`) and hands each example to that loop
with `asyncio.run_coroutine_threadsafe`, blocking only its own thread until the server has
answered; the loop stays free to run the server and the client meanwhile. Shrinking, should an
example fail, replays against the same server the same way.

Each example sends zero, one or two JSON values (plain ones from `st.recursive`, or shapes
close to the real requests so that the deeper code paths run too) as the arguments of one of
the incoming events, of an unknown event, or of the reserved names "connect"/"disconnect".
Checked for every example: the acknowledgement is the event's proper answer or an
`error`/`auth_error` payload with a code (never `internal`). Checked afterwards: the server
still answers a valid request; nothing the client received in the whole test carried another
department's data; and its subscriptions are exactly what the accepted subscribe/unsubscribe
requests made them, as seen by which updates reach it after a write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from pydantic import BaseModel

from livedash.metrics.definitions import HISTORY_SERIES
from livedash.realtime.gateway import INCOMING_EVENTS
from livedash.realtime.schemas import (
    Authenticated,
    ErrorPayload,
    HistoricalData,
    MetricsSnapshot,
    SubscriptionAck,
)
from livedash.settings import Settings
from livedash.store.models import Role
from tests.support.live import Connect, Serve
from tests.support.security import GENEROUS, assert_no_foreign_data
from tests.support.writers import Write, register_patient

pytestmark = pytest.mark.both_backends

EXAMPLES = 300
SCOPE = frozenset({"ED"})
ANSWERS: dict[str, type[BaseModel]] = {
    "authenticate": Authenticated,
    "subscribe_metrics": SubscriptionAck,
    "unsubscribe_metrics": SubscriptionAck,
    "request_snapshot": MetricsSnapshot,
    "request_historical": HistoricalData,
}
CLIENT_CODES = {
    "invalid_payload",
    "unknown_event",
    "unknown_metric",
    "forbidden",
    "invalid_token",
    "auth_failed",
}
AUTH_REFUSALS = {"invalid_token", "auth_failed"}
# Registering a patient changes these three for its department (and the hospital).
CHANGED_BY_A_PATIENT = ("patients_total", "patients_waiting", "patients_new_today")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
metric_names = st.sampled_from([*CHANGED_BY_A_PATIENT, "beds_free", "no_such", "", "m" * 65])
departments = st.sampled_from(["ED", "CARD", None, "ICU", "", "ed"])
selections = st.fixed_dictionaries(
    {},
    optional={
        "metrics": st.lists(metric_names, max_size=4) | json_values,
        "departments": st.lists(departments, max_size=3) | json_values,
    },
) | st.lists(metric_names, max_size=3)


def _moments() -> st.SearchStrategy[Any]:
    now = datetime.now(UTC).replace(tzinfo=None)
    moments = st.datetimes(now - timedelta(days=40), now + timedelta(days=2))
    return moments.map(lambda moment: moment.isoformat() + "Z") | json_values


def _historical() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {
            "metric": st.sampled_from([*HISTORY_SERIES, "bed_count"]) | json_values,
            "department": departments | json_values,
            "from": _moments(),
            "to": _moments(),
        },
        optional={"granularity": st.sampled_from(["hour", "day", "minute"]) | json_values},
    )


def _payloads(own_token: str) -> st.SearchStrategy[Any]:
    tokens = st.fixed_dictionaries({"token": st.just(own_token) | st.text() | json_values})
    return json_values | selections | _historical() | tokens


events = st.sampled_from(
    [*INCOMING_EVENTS, "connect", "disconnect", "drop_tables", "", "Subscribe_Metrics", "x" * 99]
)


def _check_answer(event: str, answer: Any) -> None:
    """The acknowledgement is the event's answer, or a refusal with a client error code."""
    if isinstance(answer, dict) and answer.get("ok") is False:
        refusal = ErrorPayload.model_validate(answer)
        assert refusal.code in CLIENT_CODES, refusal
        assert refusal.message
        return
    assert event in ANSWERS, (event, answer)
    reply = ANSWERS[event].model_validate(answer)
    if isinstance(reply, MetricsSnapshot):
        departments = {value.department for value in reply.values}
    elif isinstance(reply, HistoricalData):
        departments = {reply.department}
    else:
        assert isinstance(reply, Authenticated | SubscriptionAck)
        departments = set(reply.departments)
    assert departments <= SCOPE, (event, answer)


def _is(metric: str, department: str | None, value: Any) -> Callable[[Any], bool]:
    def match(update: Any) -> bool:
        return (update["metric"], update["department"], update["value"]) == (
            metric,
            department,
            value,
        )

    return match


def _apply(subscriptions: set[tuple[str, str | None]], event: str, answer: Any) -> None:
    """What an accepted subscribe or unsubscribe did, as its acknowledgement says."""
    if event not in ("subscribe_metrics", "unsubscribe_metrics") or answer.get("ok") is not True:
        return
    ack = SubscriptionAck.model_validate(answer)
    scopes = {(metric, department) for metric in ack.metrics for department in ack.departments}
    if event == "subscribe_metrics":
        subscriptions |= scopes
    else:
        subscriptions -= scopes


async def test_arbitrary_json_to_every_event(
    hospital: dict[str, int],
    serve: Serve,
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    server = await serve(settings.model_copy(update=GENEROUS))
    own_token = token(Role.ADMIN, ("ED",), sub="fuzzed")
    admin = await connect(server, own_token)
    start = ["patients_total", "patients_waiting"]
    await admin.call("subscribe_metrics", {"metrics": start})
    subscriptions: set[tuple[str, str | None]] = {(metric, "ED") for metric in start}
    loop = asyncio.get_running_loop()
    sent: list[str] = []

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(event=events, arguments=st.lists(_payloads(own_token), max_size=2))
    def exchange(event: str, arguments: list[Any]) -> None:
        call = admin.call(event, tuple(arguments), within=10)
        answer = asyncio.run_coroutine_threadsafe(call, loop).result(timeout=15)
        _check_answer(event, answer)
        _apply(subscriptions, event, answer)
        if event == "authenticate" and answer.get("code") in AUTH_REFUSALS:
            # A refused token ends the identity the socket had, subscriptions and all.
            subscriptions.clear()
            again = admin.call("authenticate", {"token": own_token}, within=10)
            assert asyncio.run_coroutine_threadsafe(again, loop).result(15)["sub"] == "fuzzed"
        sent.append(event)

    await asyncio.to_thread(exchange)
    assert len(sent) >= EXAMPLES

    # Still serving, and only ever ED.
    snapshot = MetricsSnapshot.model_validate(await admin.call("request_snapshot"))
    assert {value.department for value in snapshot.values} == SCOPE
    assert {department for _, department in subscriptions} <= SCOPE
    for name in ("error", "auth_error"):
        for refusal in admin.received(name):
            assert ErrorPayload.model_validate(refusal).code in CLIENT_CODES

    # Subscriptions are what the accepted requests made them: a watcher subscribed to every
    # metric of ED sees each changed value; the same emit puts the admin's copy in its queue,
    # so after one more round trip the admin has whatever it was subscribed to.
    watcher = await connect(server, token())
    await watcher.call("subscribe_metrics", {"departments": ["ED"]})
    before = len(admin.events)
    await register_patient(writer, hospital["ED"], "after the fuzz")
    await register_patient(writer, hospital["CARD"], "elsewhere")
    for metric in CHANGED_BY_A_PATIENT:
        await watcher.next("dashboard_update", _is(metric, "ED", 2))
    await admin.call("request_snapshot", ["beds_free"])
    updated = {
        (data["metric"], data["department"])
        for name, data in admin.events[before:]
        if name == "dashboard_update"
    }
    assert updated == {(m, "ED") for m in CHANGED_BY_A_PATIENT} & subscriptions
    assert_no_foreign_data(admin, SCOPE)
