"""The HTTP side of security, against real servers: headers, CORS, Origin checks, TLS, limits."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
from cryptography.hazmat.primitives import serialization
from playwright.async_api import async_playwright, expect

from livedash.app import create_app
from livedash.errors import ConfigurationError
from livedash.metrics.definitions import METRICS
from livedash.service import build_server
from livedash.settings import Settings
from livedash.testing.recorder import Recorder
from livedash.web.api import MetricInfo
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.live import Connect, LiveServer, Serve
from tests.support.rest import problem_of
from tests.support.service import InProcessService
from tests.support.tls import write_self_signed
from tests.support.writers import Write

SocketClient = Callable[..., Awaitable[socketio.AsyncClient]]

ALLOWED = "https://dashboard.hospital.example"
EVIL = "https://evil.example"
FIXED_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def expect_security_headers(response: httpx.Response, host: str, *, tls: bool) -> None:
    """The fixed headers, a CSP allowing sockets to `host` only, and HSTS exactly under TLS."""
    for name, value in FIXED_HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name)
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy == {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "connect-src": f"'self' ws://{host} wss://{host}",
        "img-src": "'self' data:",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
    }
    hsts = response.headers.get("strict-transport-security")
    assert (hsts is not None) is tls, response.url
    if tls:
        assert hsts is not None
        assert hsts == "max-age=31536000"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def sio() -> AsyncIterator[SocketClient]:
    """Socket.IO clients on sessions of their own (optionally trusting a TLS context)."""
    sessions: list[aiohttp.ClientSession] = []
    clients: list[socketio.AsyncClient] = []

    async def make(tls: ssl.SSLContext | None = None) -> socketio.AsyncClient:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls or True))
        sessions.append(session)
        client = socketio.AsyncClient(reconnection=False, http_session=session)
        clients.append(client)
        return client

    yield make
    for client in clients:
        if client.connected:
            await client.disconnect()
    for session in sessions:
        await session.close()


async def handshake(
    client: socketio.AsyncClient, url: str, token: str, origin: str | None, transport: str
) -> None:
    """Connect and authenticate, sending `origin` as a browser would (`None`: a program)."""
    recorder = Recorder(client)
    await client.connect(
        url,
        headers={"Origin": origin} if origin else {},
        auth={"token": token},
        transports=[transport],
        wait_timeout=10,
    )
    await recorder.next("authenticated")
    await client.disconnect()


# -- security headers ----------------------------------------------------------------------


async def test_every_http_response_carries_the_security_headers(server: LiveServer) -> None:
    host = f"127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/", "/static/js/app.js", "/health", "/api/metrics", "/no-such-page"):
            expect_security_headers(await client.get(path), host, tls=False)
        # The Socket.IO polling transport is answered by Engine.IO, not FastAPI.
        polling = await client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert polling.status_code == 200
        assert polling.text.startswith("0{")
        expect_security_headers(polling, host, tls=False)


async def test_the_page_runs_under_its_policy_and_the_policy_is_enforced(
    hospital: dict[str, int], server: LiveServer, token: Callable[..., str]
) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            await page.add_init_script(
                "window.violations = [];"
                "document.addEventListener('securitypolicyviolation',"
                " (e) => window.violations.push(e.effectiveDirective));"
            )
            await page.goto(f"{server.url}/#token={token()}")
            await expect(page.locator("#connection")).to_have_text("Live")
            await expect(page.locator(".now .tile").first).to_be_visible()
            # The stylesheets applied (the page's and the charts'): the login form is hidden.
            await expect(page.locator("#login")).to_be_hidden()
            assert await page.evaluate("document.styleSheets.length") == 2
            assert await page.evaluate("window.violations") == []
            assert problems == []

            # An injected inline script is refused: the policy is really in force.
            await page.evaluate(
                "() => { const s = document.createElement('script');"
                " s.textContent = 'window.injected = true'; document.body.append(s); }"
            )
            await page.wait_for_function("window.violations.length > 0")
            assert await page.evaluate("window.violations") == ["script-src-elem"]
            assert await page.evaluate("window.injected") is None
        finally:
            await browser.close()


# -- CORS and the Socket.IO handshake's Origin -------------------------------------------------


async def preflight(client: httpx.AsyncClient, origin: str) -> httpx.Response:
    return await client.options(
        "/api/metrics",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


async def test_cors_answers_listed_origins_only(
    serve: Serve, settings: Settings, token: Callable[..., str]
) -> None:
    server = await serve(settings.model_copy(update={"cors_origins": [ALLOWED + "/"]}))
    async with httpx.AsyncClient(base_url=server.url) as client:
        allowed = await preflight(client, ALLOWED)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ALLOWED
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in allowed.headers

        refused = await preflight(client, EVIL)
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers

        response = await client.get("/api/metrics", headers={"Origin": ALLOWED, **bearer(token())})
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "retry-after" in exposed
        assert "link" in exposed  # the next page of a list
        foreign = await client.get("/api/metrics", headers={"Origin": EVIL, **bearer(token())})
        assert "access-control-allow-origin" not in foreign.headers


async def test_without_listed_origins_cors_allows_nothing(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        for origin in (ALLOWED, EVIL):
            response = await preflight(client, origin)
            assert "access-control-allow-origin" not in response.headers


async def polling_handshake(client: httpx.AsyncClient, origin: str | None) -> httpx.Response:
    """Open an Engine.IO session over long-polling, as the browser's first request does."""
    return await client.get(
        "/socket.io/",
        params={"EIO": "4", "transport": "polling"},
        headers={"Origin": origin} if origin else {},
    )


async def expect_origin_checked(
    url: str,
    accepted: tuple[str | None, ...],
    refused: tuple[str, ...],
    *,
    token: str,
    sio: SocketClient,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Handshakes over both transports: `accepted` origins get in, `refused` ones do not."""
    async with httpx.AsyncClient(base_url=url, verify=tls or True) as client:
        for origin in accepted:
            opened = await polling_handshake(client, origin)
            assert opened.status_code == 200, origin
            assert opened.text.startswith("0{"), origin
            assert opened.headers.get("access-control-allow-origin") == origin, origin
            await handshake(await sio(tls), url, token, origin, "websocket")
        for origin in refused:
            assert (await polling_handshake(client, origin)).status_code == 400, origin
            with pytest.raises(socketio.exceptions.ConnectionError):
                await handshake(await sio(tls), url, token, origin, "websocket")


async def test_socket_handshake_from_a_foreign_origin_is_refused(
    serve: Serve, settings: Settings, token: Callable[..., str], sio: SocketClient
) -> None:
    listed = await serve(settings.model_copy(update={"cors_origins": [ALLOWED]}))
    await expect_origin_checked(
        listed.url, (None, ALLOWED, listed.url), (EVIL, "null"), token=token(), sio=sio
    )
    same_origin_only = await serve()
    await expect_origin_checked(
        same_origin_only.url,
        (None, same_origin_only.url),
        (ALLOWED, EVIL, "null", same_origin_only.url.replace("http:", "https:")),
        token=token(),
        sio=sio,
    )


def test_origins_must_be_origins(settings: Settings) -> None:
    for bad in ("*", "dashboard.hospital.example", "https://a.example/path", "ftp://a.example"):
        with pytest.raises(ConfigurationError, match="CORS origin"):
            create_app(settings.model_copy(update={"cors_origins": [bad]}))


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
async def tls_server(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """`livedash serve`'s own server over TLS on a free port: its URL and its certificate."""
    certfile, keyfile = write_self_signed(tmp_path)
    custom = settings.model_copy(update={"tls_certfile": certfile, "tls_keyfile": keyfile})
    service = await InProcessService(custom).start()
    try:
        yield service.url, certfile
    finally:
        await service.stop()


async def test_tls_end_to_end_with_hsts(
    tls_server: tuple[str, Path], token: Callable[..., str], sio: SocketClient
) -> None:
    url, certfile = tls_server
    trusted = ssl.create_default_context(cafile=certfile)
    async with httpx.AsyncClient(base_url=url, verify=trusted) as client:
        page = await client.get("/")
        assert page.status_code == 200
        expect_security_headers(page, url.removeprefix("https://"), tls=True)
    # The page's own origin is https://...: the Origin check must know the request's scheme.
    await expect_origin_checked(
        url,
        (None, url),
        (EVIL, url.replace("https:", "http:")),
        token=token(),
        sio=sio,
        tls=trusted,
    )
    with pytest.raises(socketio.exceptions.ConnectionError):
        await handshake(await sio(), url, token(), None, "websocket")  # the certificate is unknown


def test_tls_needs_both_files_and_a_matching_pair(settings: Settings, tmp_path: Path) -> None:
    certfile, keyfile = write_self_signed(tmp_path)
    _, other_key = write_self_signed(tmp_path, "other")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        serialization.load_pem_private_key(keyfile.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    for update, message in (
        ({"tls_certfile": certfile}, "LIVEDASH_TLS_KEYFILE is not set"),
        ({"tls_keyfile": keyfile}, "LIVEDASH_TLS_CERTFILE is not set"),
        ({"tls_certfile": certfile, "tls_keyfile": tmp_path / "missing.key"}, "missing.key"),
        ({"tls_certfile": certfile, "tls_keyfile": other_key}, "cannot use"),
        ({"tls_certfile": keyfile, "tls_keyfile": keyfile}, "cannot use"),
        ({"tls_certfile": certfile, "tls_keyfile": encrypted}, "encrypted"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            build_server(settings.model_copy(update=update))


# -- REST authentication and rate limits ----------------------------------------------------


async def test_rest_needs_a_token_and_limits_each_user(
    serve: Serve, settings: Settings, token: Callable[..., str]
) -> None:
    server = await serve(settings.model_copy(update={"rate_limit_rest": "3/minute"}))
    async with httpx.AsyncClient(base_url=server.url) as client:
        missing = await client.get("/api/metrics")
        problem_of(missing, 401, "not_authenticated")
        assert missing.headers["www-authenticate"] == "Bearer"
        forged = await client.get("/api/metrics", headers=bearer("not-a-jwt"))
        problem_of(forged, 401, "invalid_token")
        assert forged.headers["www-authenticate"] == 'Bearer error="invalid_token"'

        ann = bearer(token(sub="ann"))
        for _ in range(3):
            answer = await client.get("/api/metrics", headers=ann)
            assert answer.status_code == 200
        metrics = [MetricInfo.model_validate(item) for item in answer.json()["items"]]
        assert [metric.name for metric in metrics] == list(METRICS)

        limited = await client.get("/api/metrics", headers=ann)
        refusal = problem_of(limited, 429, "rate_limited")
        assert refusal.retry_after is not None
        assert 0 < refusal.retry_after <= 60
        assert limited.headers["retry-after"] == str(refusal.retry_after)

        # Another user, and the unauthenticated parts of the site, are not affected.
        assert (
            await client.get("/api/metrics", headers=bearer(token(sub="bob")))
        ).status_code == 200
        for path in ("/health", "/", "/static/dashboard.js") * 2:
            assert (await client.get(path, headers=ann)).status_code != 429, path


def test_bad_rate_limits_are_refused(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="rate limit"):
        create_app(settings.model_copy(update={"rate_limit_rest": "plenty"}))


async def test_a_database_failure_is_a_503_in_the_error_shape(
    hospital: dict[str, int],
    server: LiveServer,
    token: Any,
    sqlite_writer: Write,
) -> None:
    bearer = {"Authorization": f"Bearer {token()}"}
    # A token the database has not checked yet: one it approved minutes ago is still let in
    # while the database is down.
    unseen = {"Authorization": f"Bearer {token()}"}
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/api/metrics", headers=bearer)).status_code == 200
        # The users table goes missing under the service, as a broken database would have it.
        await sqlite_writer("ALTER TABLE users RENAME TO users_away", ())
        try:
            failed = await http.get("/api/metrics", headers=unseen)
            remembered = await http.get("/api/metrics", headers=bearer)
        finally:
            await sqlite_writer("ALTER TABLE users_away RENAME TO users", ())
    assert remembered.status_code == 200, remembered.text
    assert problem_of(failed, 503, "unavailable").retry_after == 5
    assert failed.headers["Retry-After"] == "5"


async def test_signing_in_while_the_database_is_down_is_refused_as_unavailable(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    users: Any,
    sqlite_writer: Write,
) -> None:
    screen = await connect(server)
    unseen = token()  # a token the database has not approved yet
    await users.settled()  # its user is written before the table goes missing
    # The users table goes missing under the service, as a broken database would have it.
    await sqlite_writer("ALTER TABLE users RENAME TO users_away", ())
    try:
        refused = await screen.call("authenticate", {"token": unseen})
    finally:
        await sqlite_writer("ALTER TABLE users_away RENAME TO users", ())
    # Told to come back, not signed out and not "internal": the token may be fine.
    assert (refused["code"], refused["event"], refused["retry_after"]) == (
        "unavailable",
        "authenticate",
        5.0,
    )
    assert screen.received("error") == [refused]
    assert not screen.received("auth_error")
    assert (await screen.call("authenticate", {"token": unseen}))["sub"] == "test-super_admin"
