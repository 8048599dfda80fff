"""Schemathesis against the REST API's own OpenAPI schema, on a live server.

Schemathesis drives its calls synchronously, so it runs in a worker thread while the server
under test keeps serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from livedash.settings import Settings
from tests.support.live import LiveServer

EXAMPLES = 120


def _run(url: str, bearer: str) -> int:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    calls = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=schema.as_strategy())
    def check(case: Any) -> None:
        nonlocal calls
        calls += 1
        headers = {"Authorization": f"Bearer {bearer}", **(case.headers or {})}
        response = case.call(base_url=url, headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])
        case.validate_response(response)

    check()
    return calls


async def test_rest_api_conforms_to_its_schema_and_never_fails(
    serve: Callable[..., Awaitable[LiveServer]], settings: Settings, token: Any
) -> None:
    generous = settings.model_copy(update={"rate_limit_rest": "100000/minute"})
    server = await serve(generous)
    calls = await asyncio.to_thread(_run, server.url, token())
    assert calls >= EXAMPLES // 2
