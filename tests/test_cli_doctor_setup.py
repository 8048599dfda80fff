"""`livedash doctor` beyond the database: the settings and signing key, the port, the SMTP
relay and the Web Push key, each against the real thing (a listening socket, a running
livedash, an SMTP server), and each remedy applied as an administrator would."""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from livedash.cli import app
from livedash.settings import Settings
from livedash.testing.servers import RedisServer, free_port
from tests.support.live import LiveServer
from tests.support.smtp import SmtpServer, tls_contexts


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI configures logging for its process, which here is the test run.
    monkeypatch.setattr("livedash.cli.configure_logging", lambda *args, **kwargs: None)


@pytest.fixture
def base(tmp_path: Path, database_path: Path) -> dict[str, str | None]:
    """A healthy single instance: a migrated SQLite file, a free port, nothing else."""
    return {
        "LIVEDASH_DATABASE_URL": f"sqlite+aiosqlite:///{database_path}",
        "LIVEDASH_PORT": str(free_port()),
        "LIVEDASH_JWT_SECRET": None,
        "LIVEDASH_JWT_SECRET_FILE": str(tmp_path / "jwt-secret"),
        "LIVEDASH_REDIS_URL": None,
        "LIVEDASH_PUBLIC_URL": None,
        "LIVEDASH_SMTP_HOST": None,
        "LIVEDASH_VAPID_PRIVATE_KEY_FILE": None,
    }


async def doctor(environment: dict[str, str | None], **settings: str | None) -> Result:
    """`livedash doctor` with `environment` and these LIVEDASH_ settings (in a thread)."""
    env = {**environment, **{f"LIVEDASH_{k.upper()}": v for k, v in settings.items()}}
    return await asyncio.to_thread(CliRunner().invoke, app, ["doctor"], env=env)


def line(result: Result, name: str) -> str:
    """The output line of check `name`."""
    found = [text for text in result.stdout.splitlines() if text[6:].startswith(name + " ")]
    assert len(found) == 1, result.stdout
    return found[0]


def fix(result: Result, name: str) -> str:
    """The remedy printed under check `name`."""
    lines = result.stdout.splitlines()
    start = lines.index(line(result, name))
    assert "fix: " in lines[start + 1], result.stdout
    return lines[start + 1].split("fix: ", 1)[1]


async def test_a_single_instance_passes_and_nothing_is_created(
    base: dict[str, str | None], tmp_path: Path
) -> None:
    result = await doctor(base)
    assert result.exit_code == 0, result.stdout
    assert "settings parse; a single instance on SQLite" in line(result, "configuration")
    assert "to be created in" in line(result, "configuration")
    assert line(result, "port") == f"OK    port           127.0.0.1:{base['LIVEDASH_PORT']} is free"
    assert "smtp" not in result.stdout
    assert "web push" not in result.stdout
    assert not (tmp_path / "jwt-secret").exists()  # the doctor creates no key


async def test_a_deployment_needs_a_shared_key_and_its_public_address(
    base: dict[str, str | None], tmp_path: Path, redis_server: RedisServer
) -> None:
    deployment = {**base, "LIVEDASH_REDIS_URL": redis_server.url}
    result = await doctor(deployment)
    assert result.exit_code == 1
    check = line(result, "configuration")
    assert check.startswith("FAIL")
    assert "no token signing key" in check
    assert "each instance would create its own" in check
    assert "LIVEDASH_PUBLIC_URL is http://localhost:8000" in check
    assert "set LIVEDASH_JWT_SECRET to the same random value on every instance" in fix(
        result, "configuration"
    )
    assert not (tmp_path / "jwt-secret").exists()

    short = await doctor(deployment, jwt_secret="too short")
    assert "at least 32 bytes" in line(short, "configuration")

    fixed = await doctor(
        deployment, jwt_secret=secrets.token_urlsafe(48), public_url="https://livedash.example"
    )
    assert fixed.exit_code == 0, fixed.stdout
    assert "a deployment (PostgreSQL or Redis); signing key from LIVEDASH_JWT_SECRET" in line(
        fixed, "configuration"
    )


async def test_a_port_taken_by_another_program_fails_one_served_by_livedash_passes(
    base: dict[str, str | None], server: LiveServer, settings: Settings
) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        taken = await doctor(base, port=str(port))
        assert taken.exit_code == 1
        assert f"127.0.0.1:{port} is in use by another program" in line(taken, "port")
        assert f"`ss -ltnp 'sport = :{port}'`" in fix(taken, "port")
    ours = await doctor(base, port=str(server.port))
    assert ours.exit_code == 0, ours.stdout
    assert f"127.0.0.1:{server.port} is served by a running livedash (ok)" in line(ours, "port")
    nowhere = await doctor(base, host="192.0.2.1")  # TEST-NET-1: never this machine's
    assert "192.0.2.1 is not an address of this machine" in line(nowhere, "port")


async def test_the_smtp_relay_answers_ehlo_and_offers_what_the_settings_need(
    base: dict[str, str | None], tmp_path: Path
) -> None:
    async with SmtpServer() as relay:
        relay_settings = {"smtp_host": "127.0.0.1", "smtp_port": str(relay.port)}
        plain = await doctor(base, **relay_settings, smtp_tls="none")
        assert plain.exit_code == 0, plain.stdout
        assert f"127.0.0.1:{relay.port} answers EHLO" in line(plain, "smtp")
        assert line(plain, "smtp").endswith("(no mail sent)")
        assert relay.received == []

        wants_tls = await doctor(base, **relay_settings, smtp_tls="starttls")
        assert wants_tls.exit_code == 1
        assert "answers but does not offer STARTTLS" in line(wants_tls, "smtp")
        assert "LIVEDASH_SMTP_TLS=tls" in fix(wants_tls, "smtp")

        half = await doctor(base, **relay_settings, smtp_tls="none", smtp_username="ann")
        assert "give both username and password" in line(half, "smtp")

    server_context, _client = tls_contexts(tmp_path)
    async with SmtpServer(tls="starttls", tls_context=server_context) as untrusted:
        refused = await doctor(
            base, smtp_host="127.0.0.1", smtp_port=str(untrusted.port), smtp_tls="starttls"
        )
        assert refused.exit_code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in line(refused, "smtp")  # a self-signed relay

    closed = free_port()
    nobody = await doctor(base, smtp_host="127.0.0.1", smtp_port=str(closed), smtp_tls="none")
    assert f"cannot talk to 127.0.0.1:{closed}" in line(nobody, "smtp")
    assert "firewall" in fix(nobody, "smtp")


async def test_the_web_push_key_must_read_and_the_remedy_makes_one(
    base: dict[str, str | None], tmp_path: Path
) -> None:
    key = tmp_path / "vapid.pem"
    missing = await doctor(base, vapid_private_key_file=str(key))
    assert missing.exit_code == 1
    assert f"cannot read {key}" in line(missing, "web push")
    remedy = fix(missing, "web push")
    assert remedy.startswith(f"`livedash vapid-keys --out {key}`")
    made = CliRunner().invoke(app, ["vapid-keys", "--out", str(key)])  # the remedy
    assert made.exit_code == 0, made.output
    good = await doctor(base, vapid_private_key_file=str(key))
    assert good.exit_code == 0, good.stdout
    assert f"P-256 key in {key}" in line(good, "web push")

    bad_subject = await doctor(base, vapid_private_key_file=str(key), vapid_subject="ops@x")
    assert "mailto:" in fix(bad_subject, "web push")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    unreadable = await doctor(base, vapid_private_key_file=str(garbage))
    assert "not an unencrypted PEM private key" in line(unreadable, "web push")
