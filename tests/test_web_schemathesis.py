"""Schemathesis against the REST API's own OpenAPI schema, on a live server.

Every operation is called with valid requests and with invalid ones, and every response is
validated against the schema: its status, its media type and its body, problem details
included. Schemathesis drives its calls synchronously, so it runs in a worker thread while the
server under test keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection

from livedash.settings import Settings
from livedash.web.problems import PROBLEM_JSON
from tests.support.live import LiveServer

EXAMPLES_PER_OPERATION = 12
NEW_OPERATIONS = {
    "GET /api/snapshot",
    "GET /api/departments/{code}/snapshot",
    "GET /api/departments",
    "GET /api/history",
    "GET /api/realtime/stats",
}

Seen = Counter[tuple[str, int]]


def _run(url: str, bearer: str) -> Seen:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    seen: Seen = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        )

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=cases)
        def check(case: Any) -> None:
            headers = {"Authorization": f"Bearer {bearer}", **(case.headers or {})}
            response = case.call(base_url=url, headers=headers)
            seen[case.operation.label, response.status_code] += 1
            assert response.status_code < 500, (case.method, case.path, response.text[:300])
            if response.status_code >= 400:
                assert response.headers["content-type"] == [PROBLEM_JSON], response.headers
            # Not `negative_data_rejection`: a query parameter no route names is ignored, as
            # HTTP APIs do, and the Authorization header an invalid case leaves out is put back
            # above. Invalid requests are still called, and their refusals validated.
            case.validate_response(response, excluded_checks=[negative_data_rejection])

        check()
    return seen


async def test_rest_api_conforms_to_its_schema_and_never_fails(
    hospital: dict[str, int],
    serve: Callable[..., Awaitable[LiveServer]],
    settings: Settings,
    token: Any,
) -> None:
    generous = settings.model_copy(update={"rate_limit_rest": "100000/minute"})
    server = await serve(generous)
    seen = await asyncio.to_thread(_run, server.url, token())
    called = {label for label, _ in seen}
    assert called >= NEW_OPERATIONS
    # Problems were validated too: refusals of the new operations' bad requests among them.
    refused = {label for label, status in seen if 400 <= status < 500}
    assert refused & NEW_OPERATIONS, seen
