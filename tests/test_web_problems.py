"""Every REST error is RFC 9457 problem details, on a live server: each kind of refusal, as a
client reads it (status, media type, fields, headers), and as the OpenAPI schema declares it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from livedash.settings import Settings
from livedash.store.models import Role
from livedash.web.problems import PROBLEM_JSON
from tests.support.alerting import bearer
from tests.support.live import LiveServer, Serve
from tests.support.probes import services_of
from tests.support.rest import problem_of

MARKER = "zq-echo-probe-41b7"


async def test_refusals_of_the_caller_are_problems(
    hospital: dict[str, int], server: LiveServer, token: Any
) -> None:
    viewer = bearer(token(Role.VIEWER, ("ED",), sub="ed-viewer"))
    async with httpx.AsyncClient(base_url=server.url) as http:
        missing = await http.get("/api/alerts")
        assert "Authorization" in problem_of(missing, 401, "not_authenticated").detail
        assert missing.headers["www-authenticate"] == "Bearer"

        forged = await http.get("/api/alerts", headers=bearer("not-a-jwt"))
        assert problem_of(forged, 401, "invalid_token").title == "Invalid token"
        assert forged.headers["www-authenticate"] == 'Bearer error="invalid_token"'

        rules = await http.get("/api/alerts/rules", headers=viewer)
        assert problem_of(rules, 403, "forbidden").title == "Forbidden"
        details = await http.get("/health", headers=viewer)
        problem_of(details, 403, "forbidden")
        no_alert = await http.post("/api/alerts/31337/resolve", headers=bearer(token()))
        problem_of(no_alert, 404, "unknown_alert")


async def test_requests_the_app_cannot_serve_are_problems(server: LiveServer, token: Any) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        for path in ("/no-such-page", "/api/no-such-list", "/static/no-such-file.js"):
            assert problem_of(await http.get(path), 404, "not_found").title == "Not found"
        wrong_method = await http.delete("/api/metrics", headers=bearer(token()))
        assert problem_of(wrong_method, 405, "method_not_allowed").detail.startswith("DELETE")
        assert wrong_method.headers["allow"] == "GET"
        unreadable = await http.put(
            "/api/alerts/rules",
            headers={**bearer(token()), "Content-Type": "application/json"},
            content=b"\x80",  # not UTF-8: no JSON to decode
        )
        problem_of(unreadable, 400, "bad_request")


async def test_invalid_requests_are_problems_that_never_repeat_the_values_sent(
    server: LiveServer, token: Any
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        answers = [
            await http.get("/api/metrics", headers=bearer(token()), params={"limit": MARKER}),
            await http.get("/api/alerts", headers=bearer(token()), params={"status": MARKER}),
            await http.get("/api/metrics", headers=bearer(token()), params={"cursor": MARKER}),
            await http.post("/api/auth/login", json={"username": [MARKER], "password": MARKER}),
        ]
    for answer in answers:
        refusal = problem_of(answer, 422, "invalid_payload")
        assert refusal.title == "Invalid request"
        assert MARKER not in answer.text
    assert answers[0].json()["detail"].startswith("query.limit: ")
    assert answers[2].json()["detail"].startswith("cursor: ")


async def test_rate_limits_say_when_to_come_back(
    serve: Serve, settings: Settings, token: Any
) -> None:
    server = await serve(settings.model_copy(update={"rate_limit_rest": "1/minute"}))
    async with httpx.AsyncClient(base_url=server.url) as http:
        ann = bearer(token(sub="ann"))
        assert (await http.get("/api/metrics", headers=ann)).status_code == 200
        limited = await http.get("/api/metrics", headers=ann)
    refusal = problem_of(limited, 429, "rate_limited")
    assert refusal.retry_after is not None
    assert 0 < refusal.retry_after <= 60
    assert limited.headers["retry-after"] == str(refusal.retry_after)


async def test_an_unexpected_failure_is_a_problem_that_tells_nothing(
    hospital: dict[str, int], server: LiveServer, token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"the secret details of {MARKER}")

    monkeypatch.setattr(services_of(server).view, "snapshot", broken)
    async with httpx.AsyncClient(base_url=server.url) as http:
        failed = await http.get("/api/snapshot", headers=bearer(token()))
    refusal = problem_of(failed, 500, "internal")
    assert refusal.detail == "internal error"
    assert MARKER not in failed.text


async def test_an_oversized_body_is_refused_as_a_problem(server: LiveServer) -> None:
    # Refused in front of the app (RequestLimits); a head too large: tests/test_web_limits.py.
    async with httpx.AsyncClient(base_url=server.url) as http:
        body = await http.post("/api/auth/login", content=b"{" + b" " * 100_000 + b"}")
    assert "4096 bytes" in problem_of(body, 413, "payload_too_large").detail


async def test_the_schema_declares_every_error_as_problem_details(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        schema = (await http.get("/openapi.json")).json()
    declared = schema["components"]["schemas"]["Problem"]
    assert set(declared["required"]) == {"type", "title", "status", "detail", "code"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert {"431", "500"} <= set(responses), (method, path)
            for status, response in responses.items():
                if int(status) < 400:
                    continue
                assert response["content"] == {
                    PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                }, (method, path, status)
