"""Logs as an operator reads them: JSON or text lines, request ids, socket context, and no
secret or patient name in any of them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr, ValidationError
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from livedash.auth.api_keys import KEY_MARK, PREFIX_LENGTH, create_api_key
from livedash.auth.sessions import set_password
from livedash.auth.tokens import issue_token
from livedash.errors import ConfigurationError
from livedash.observability.logging import (
    ENGINEIO_LOGGER,
    REDACTED,
    SOCKETIO_LOGGER,
    UVICORN_LOGGER,
    configure_logging,
    redact_secrets,
)
from livedash.service import build_server
from livedash.settings import Settings
from livedash.store.engine import create_engine
from livedash.store.models import Role
from livedash.testing.servers import free_port
from livedash.web.request_context import request_id_of
from tests.support.live import Connect, Serve
from tests.support.logs import use_test_logging
from tests.support.writers import Users

PASSWORD = "Tr0ub4dor&3-correct-horse"
WRONG_PASSWORD = "Tr0ub4dor&3-wrong-horse"
PATIENT = "Zebedee Quarrington-Fitzwilliam"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Where the test's logs go; logging is put back as it was afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    names = (UVICORN_LOGGER, "uvicorn.error", "uvicorn.access", SOCKETIO_LOGGER, ENGINEIO_LOGGER)
    levels = {name: logging.getLogger(name).level for name in names}
    yield tmp_path / "logs" / "livedash.log"
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    use_test_logging()


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be one JSON event."""
    lines = path.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    for event in events:
        assert {"timestamp", "level", "event"} <= event.keys(), event
    return events


def log_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def redacted(value: Any) -> Any:
    return redact_secrets(None, "info", {"value": value})["value"]


# -- the redaction processor ---------------------------------------------------------------


def test_sensitive_fields_are_blanked_whatever_they_hold() -> None:
    event = {
        "event": "login",
        "token": "abc",
        "access_token": "abc",
        "refresh_token": "abc",
        "password": "hunter2",
        "new_password": "hunter2",
        "api_key": "anything",
        "X-Api-Key": "anything",
        "Authorization": "Basic Zm9vOmJhcg==",
        "cookie": "session=1",
        "jwt_secret": "s3cr3t",
        "client_secret": 42,
        "headers": {"set-cookie": "session=1", "accept": "text/html"},
        "nested": [{"password": "hunter2"}],
        "token_missing": None,  # nothing to hide
        "password_set": True,
    }
    assert redact_secrets(None, "info", event) == {
        "event": "login",
        "token": REDACTED,
        "access_token": REDACTED,
        "refresh_token": REDACTED,
        "password": REDACTED,
        "new_password": REDACTED,
        "api_key": REDACTED,
        "X-Api-Key": REDACTED,
        "Authorization": REDACTED,
        "cookie": REDACTED,
        "jwt_secret": REDACTED,
        "client_secret": REDACTED,
        "headers": {"set-cookie": REDACTED, "accept": "text/html"},
        "nested": [{"password": REDACTED}],
        "token_missing": None,
        "password_set": True,
    }


def test_ordinary_fields_are_left_alone() -> None:
    event = {
        "event": "audit_token_revoked",
        "key": "main-app",  # an API key's name, as ingest logs it
        "user": "ann",
        "sid": "Zk3abc",
        "tokens_valid_after": "2026-03-01T08:00:00",
        "status": 401,
        "duration_ms": 1.5,
        "found": True,
        "reason": "a basic check failed",
        "path": "/api/auth/login",
    }
    assert redact_secrets(None, "info", dict(event)) == event


def test_tokens_and_keys_are_cut_out_of_any_text(settings: Settings) -> None:
    jwt = issue_token(settings, "ann", Role.ADMIN)
    key = f"{KEY_MARK}{'a1b2c3d4'[:PREFIX_LENGTH]}_{secrets.token_urlsafe(32)}"
    refresh = f"{secrets.token_urlsafe(12)}.{secrets.token_urlsafe(32)}"  # auth.sessions' form
    assert redacted(f"refused {jwt}: expired") == f"refused {REDACTED}: expired"
    assert redacted(f"key {key} revoked") == f"key {REDACTED} revoked"
    assert redacted(f"unknown refresh token {refresh}") == f"unknown refresh token {REDACTED}"
    assert redacted(f"Authorization: Bearer {jwt}") == f"Authorization: Bearer {REDACTED}"
    assert redacted("Authorization: Basic Zm9vOmJhcg==") == f"Authorization: Basic {REDACTED}"
    assert (
        redacted("GET /api/metrics?token=abc.def&x=1") == f"GET /api/metrics?token={REDACTED}&x=1"
    )
    assert redacted("GET /x?api_key=k#top") == f"GET /x?api_key={REDACTED}#top"
    assert (
        redacted("cannot reach postgresql+asyncpg://app:hunter2@db:5432/livedash")
        == f"cannot reach postgresql+asyncpg://app:{REDACTED}@db:5432/livedash"
    )
    # In containers, and in what is only rendered as its repr.
    assert redacted({"detail": [jwt, (key,)]}) == {"detail": [REDACTED, [REDACTED]]}
    assert redacted(RuntimeError(jwt)) == f"RuntimeError('{REDACTED}')"
    # Ordinary text (and the words themselves) stays.
    for plain in ("a basic check", "token expired", "Bearer", "ldk_short", "eyJ alone", "a.b.c"):
        assert redacted(plain) == plain


def test_sql_parameters_in_a_database_error_are_cut_out() -> None:
    engine = create_sync_engine("sqlite://")
    with pytest.raises(OperationalError) as caught, engine.connect() as connection:
        connection.execute(text("SELECT * FROM patients WHERE name = :name"), {"name": PATIENT})
    engine.dispose()
    message = f"cannot read the patients: {caught.value}"
    assert PATIENT in message
    cleaned = redacted(message)
    assert PATIENT not in cleaned
    assert "no such table: patients" in cleaned
    assert f"[parameters: {REDACTED}]" in cleaned


def test_request_ids_are_taken_when_sane_and_made_otherwise() -> None:
    def scope(*values: bytes) -> dict[str, Any]:
        return {"headers": [(b"x-request-id", value) for value in values]}

    assert request_id_of(scope(b"req-42")) == "req-42"
    assert request_id_of(scope(b"f47ac10b-58cc-4372-a567-0e02b2c3d479")).startswith("f47ac10b")
    assert request_id_of(scope(b"first", b"second")) == "first"
    for insane in (b"", b"a" * 129, b"has space", b'quote"', b"new\nline", "é".encode()):
        assert GENERATED_ID.fullmatch(request_id_of(scope(insane))), insane
    assert GENERATED_ID.fullmatch(request_id_of({"headers": []}))
    assert request_id_of({"headers": []}) != request_id_of({"headers": []})


# -- configure_logging ---------------------------------------------------------------------


def test_json_lines_carry_level_time_logger_and_context(log_file: Path) -> None:
    configure_logging("info", json=True, file=log_file)
    log = structlog.get_logger("livedash.example")
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        log.info("thing_done", n=3)
    log.debug("hidden")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 7)
    logging.getLogger("httpx").info("HTTP Request: GET http://x/?token=abc")  # chatter
    logging.getLogger("httpx").warning("retrying")
    events = json_lines(log_file)
    assert [(e["event"], e["level"], e["logger"]) for e in events] == [
        ("thing_done", "info", "livedash.example"),
        ("Started server process [7]", "info", "uvicorn.error"),
        ("retrying", "warning", "httpx"),
    ]
    assert events[0]["request_id"] == "r-1"
    assert events[0]["n"] == 3
    assert events[0]["timestamp"].endswith("Z")
    assert "request_id" not in events[1]  # unbound once the block ended


def test_the_level_applies_to_uvicorn_and_to_livedash(log_file: Path) -> None:
    configure_logging("WARNING", json=True, file=log_file)
    structlog.get_logger("livedash.example").info("hidden")
    logging.getLogger("uvicorn.error").info("hidden too")
    structlog.get_logger("livedash.example").warning("shown")
    logging.getLogger("uvicorn.error").error("shown too")
    assert [e["event"] for e in json_lines(log_file)] == ["shown", "shown too"]


def test_exceptions_are_written_out_and_redacted(log_file: Path, settings: Settings) -> None:
    jwt = issue_token(settings, "ann", Role.ADMIN)
    configure_logging("info", json=True, file=log_file)
    try:
        raise RuntimeError(f"refused {jwt}")
    except RuntimeError:
        structlog.get_logger("livedash.example").exception("event_failed")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    events = json_lines(log_file)
    assert [e["event"] for e in events] == ["event_failed", "Exception in ASGI application"]
    for event in events:
        assert "Traceback" in event["exception"]
        assert f"RuntimeError: refused {REDACTED}" in event["exception"]
    assert jwt not in log_file.read_text()


def test_text_when_asked_and_when_written_to_a_terminal(log_file: Path, tmp_path: Path) -> None:
    configure_logging("info", json=False, file=log_file)
    structlog.get_logger("livedash.example").info("thing_done", user="ann")
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    lines = log_file.read_text().splitlines()
    assert len(lines) == 2
    assert re.search(r"\bthing_done\b.*\buser=ann\b", lines[0])
    assert re.search(r"Application startup complete\..*\buvicorn\.error\b", lines[1])
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])

    # Unset: JSON into a file, text (in colour) on a terminal.
    configure_logging("info", file=tmp_path / "auto.log")
    structlog.get_logger("livedash.example").info("to_a_file")
    assert json_lines(tmp_path / "auto.log")[0]["event"] == "to_a_file"
    terminal, device = os.openpty()
    try:
        configure_logging("info", file=Path(os.ttyname(device)))
        structlog.get_logger("livedash.example").info("to_a_terminal")
        shown = os.read(terminal, 65536).decode()
    finally:
        configure_logging("info", json=True, file=log_file)  # closes the terminal's handler
        os.close(terminal)
        os.close(device)
    assert "to_a_terminal" in shown
    assert "\x1b[" in shown
    assert not shown.lstrip().startswith("{")


def test_bad_levels_and_destinations_are_refused(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="unknown log level 'verbose'"):
        configure_logging("verbose")
    with pytest.raises(ValidationError, match="unknown log level"):
        settings.model_validate({**settings.model_dump(), "log_level": "verbose"})
    assert Settings(log_level="DEBUG", _env_file=None).log_level == "debug"  # type: ignore[call-arg]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigurationError, match="cannot write the log file"):
        configure_logging("info", file=blocker / "livedash.log")


# -- a served instance -------------------------------------------------------------------


async def test_uvicorn_logs_through_the_same_pipeline_without_its_access_log(
    log_file: Path, settings: Settings
) -> None:
    configure_logging("info", json=True, file=log_file)
    ready = asyncio.Event()
    server = build_server(settings.model_copy(update={"port": free_port()}), ready.set)
    serving = asyncio.create_task(server.serve())
    waiting = asyncio.create_task(ready.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    assert ready.is_set(), serving.result()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.config.port}") as client:
            response = await client.get("/api/metrics", params={"token": "abc"})
    finally:
        server.should_exit = True
        await serving
    events = json_lines(log_file)
    uvicorn = [e["event"] for e in events if e.get("logger") == "uvicorn.error"]
    assert "Application startup complete." in uvicorn
    assert any(line.startswith("Uvicorn running on") for line in uvicorn)
    assert not [e for e in events if e.get("logger") == "uvicorn.access"]
    [request] = [e for e in events if e["event"] == "request"]
    assert request["path"] == "/api/metrics"
    assert request["status"] == response.status_code
    assert request["request_id"] == response.headers["x-request-id"]
    assert request["logger"] == "livedash.web.request_context"


async def test_a_served_instance_logs_requests_and_sockets_without_secrets(
    log_file: Path,
    settings: Settings,
    serve: Serve,
    connect: Connect,
    users: Users,
    hospital: dict[str, int],
    database_url: str,
) -> None:
    configure_logging("info", json=True, file=log_file)
    database = create_engine(database_url, writer=True)
    try:
        users.save("ann", Role.ADMIN, ["ED"])
        assert await set_password(database, "ann", PASSWORD)
        key = await create_api_key(database, "main-app")
    finally:
        await database.dispose()
    server = await serve()
    forged = issue_token(
        settings.model_copy(update={"jwt_secret": SecretStr("another-secret-" + "y" * 64)}),
        "ann",
        Role.SUPER_ADMIN,
    )

    async with httpx.AsyncClient(base_url=server.url) as client:
        wrong = await client.post(
            "/api/auth/login",
            json={"username": "ann", "password": WRONG_PASSWORD},
            headers={"X-Request-ID": "wrong-password-1"},
        )
        login = await client.post("/api/auth/login", json={"username": "ann", "password": PASSWORD})
        assert (wrong.status_code, login.status_code) == (401, 200), login.text
        access, refresh = login.json()["access_token"], login.json()["refresh_token"]
        in_query = await client.get(
            "/api/metrics", params={"token": access}, headers={"X-Request-ID": "not sane!"}
        )
        handshake = await client.get(
            "/socket.io/", params={"EIO": "4", "transport": "polling", "token": access}
        )
        assert handshake.status_code == 200, handshake.text
        ingest = {"Authorization": f"Bearer {key}"}
        patient = {
            "department_id": hospital["ED"],
            "name": PATIENT,
            "status": "registered",
            "emergency": False,
            "registered_at": "2026-03-01T09:30:00+01:00",
        }
        applied = await client.post(
            "/api/ingest",
            json={"operations": [{"table": "patients", "op": "insert", "row": patient}]},
            headers=ingest,
        )
        refused = await client.post(
            "/api/ingest",
            json={
                "operations": [
                    {
                        "table": "patients",
                        "op": "insert",
                        "row": {**patient, "department_id": 999_999},
                    }
                ]
            },
            headers=ingest,
        )
        assert (applied.status_code, refused.status_code) == (200, 400), applied.text

    dashboard = await connect(server, access)
    sid = dashboard.client.get_sid()
    unknown = await dashboard.call("no_such_event", {})
    assert unknown["code"] == "unknown_event"
    intruder = await connect(server, forged, wait_auth=False)
    await intruder.next("auth_error")
    intruder_sid = intruder.client.get_sid()
    await server.stop()  # every line written

    events = json_lines(log_file)
    requests = {e["request_id"]: e for e in events if e["event"] == "request"}
    assert all(
        {"method", "path", "status", "duration_ms", "client"} <= e.keys() and "?" not in e["path"]
        for e in requests.values()
    )
    # Echoed when given and sane, made when not; the app's own events carry it too.
    assert wrong.headers["x-request-id"] == "wrong-password-1"
    assert requests["wrong-password-1"]["path"] == "/api/auth/login"
    assert requests["wrong-password-1"]["status"] == 401
    assert {"event": "login_failed", "request_id": "wrong-password-1"}.items() <= next(
        e for e in events if e["event"] == "login_failed"
    ).items()
    for response, path in (
        (login, "/api/auth/login"),
        (in_query, "/api/metrics"),
        (handshake, "/socket.io/"),
        (applied, "/api/ingest"),
    ):
        request_id = response.headers["x-request-id"]
        assert GENERATED_ID.fullmatch(request_id)
        assert (requests[request_id]["path"], requests[request_id]["status"]) == (
            path,
            response.status_code,
        )
    applied_id = applied.headers["x-request-id"]
    assert [e["request_id"] for e in events if e["event"] == "ingest_applied"] == [applied_id]

    # Socket events carry their socket and its user (none before signing in).
    authenticated = next(e for e in events if e["event"] == "socket_authenticated")
    assert (authenticated["sid"], authenticated["user"]) == (sid, "ann")
    refusals = {
        (e["sid"], e["user"], e["socket_event"], e["code"])
        for e in events
        if e["event"] == "client_refused"
    }
    assert (sid, "ann", "no_such_event", "unknown_event") in refusals
    assert (intruder_sid, None, "authenticate", "invalid_token") in refusals

    written = log_text(log_file)
    decoded = json.dumps(events, ensure_ascii=False)
    for secret in (PASSWORD, WRONG_PASSWORD, access, refresh, key, forged, PATIENT):
        assert secret not in written
        assert secret not in decoded
