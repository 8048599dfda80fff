"""The deployment's instances as an IT person sees them: `GET /api/realtime/stats` and
`livedash status`, with two real `livedash serve` processes sharing PostgreSQL and Redis,
and one instance on SQLite without Redis."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from livedash import __version__
from livedash.auth.tokens import issue_token
from livedash.cluster.deployment import run_status
from livedash.settings import Settings
from livedash.store.migrate import upgrade_async
from livedash.store.models import Role
from livedash.testing.servers import free_port
from tests.support.instances import Instance
from tests.support.live import Connect, LiveServer
from tests.support.writers import Users

WITHIN_SECONDS = 30.0


async def stats(instance: Instance) -> dict[str, Any]:
    """`GET /api/realtime/stats` of `instance`, as its super_admin sees it."""
    async with httpx.AsyncClient(base_url=instance.url, timeout=10) as http:
        response = await http.get(
            "/api/realtime/stats", headers={"Authorization": f"Bearer {instance.token}"}
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def feed_check(instance: Instance) -> dict[str, Any]:
    """The `feed` check of `instance`'s `/health/ready`, as its super_admin sees it."""
    async with httpx.AsyncClient(base_url=instance.url, timeout=10) as http:
        response = await http.get(
            "/health/ready", headers={"Authorization": f"Bearer {instance.token}"}
        )
    check: dict[str, Any] = response.json()["checks"]["feed"]
    return check


async def eventually(
    ask: Callable[[], Awaitable[Any]], wanted: Callable[[Any], bool], what: str
) -> Any:
    """Ask until the answer is `wanted` (instances report every 2 s)."""
    deadline = time.monotonic() + WITHIN_SECONDS
    while True:
        answer = await ask()
        if wanted(answer):
            return answer
        assert time.monotonic() < deadline, f"{what}: still {answer}"
        await asyncio.sleep(0.1)


async def livedash_status(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`livedash status` in its own process, as an operator runs it: exit code and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "livedash", "status", *args,
        env={**env, "COLUMNS": "250"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), out.decode(), err.decode()


@pytest.fixture
def backend() -> str:
    return "postgres"


async def test_every_instance_is_listed_with_its_role_sockets_lag_and_version_until_it_stops(
    two_instances: list[Instance], settings: Settings, connect: Connect
) -> None:
    first, second = two_instances
    await connect(first, first.token)  # type: ignore[arg-type]  # anything with a `url`

    def settled(answer: dict[str, Any]) -> bool:
        listed = answer["deployment"]["instances"]
        return (
            len(listed) == 2
            and sorted(i["role"] for i in listed) == ["follower", "leader"]
            and all(i["ready"] for i in listed)
            and sum(i["connections"] for i in listed) == 1
        )

    answer = await eventually(lambda: stats(second), settled, "both instances, ready")
    listed = {i["instance"]: i for i in answer["deployment"]["instances"]}
    mine = answer["instance"]["instance"]
    assert mine in listed
    assert listed[mine]["connections"] == 0
    first_name = next(name for name in listed if name != mine)
    assert listed[first_name]["connections"] == 1
    for item in listed.values():
        assert item["version"] == __version__
        assert item["started_at"] is not None
        assert item["failing"] == []
    [leader] = [i for i in listed.values() if i["role"] == "leader"]
    [follower] = [i for i in listed.values() if i["role"] == "follower"]
    assert isinstance(leader["feed_lag_seconds"], float | int)
    assert follower["feed_lag_seconds"] is None  # it reads no feed
    # Its readiness tells the leader's lag, read from the board: its own feed is not blamed.
    on_follower = first if listed[first_name]["role"] == "follower" else second
    feed = await eventually(
        lambda: feed_check(on_follower),
        lambda check: isinstance(check.get("leader_lag_seconds"), float | int),
        "the follower's view of the leader's lag",
    )
    assert feed["ok"] is True
    assert feed["role"] == "follower"

    # The operator's view: the same settings as the service, no token.
    env = {
        **os.environ,
        "LIVEDASH_DATABASE_URL": settings.database_url,
        "LIVEDASH_REDIS_URL": str(settings.redis_url),
    }
    # Both were ready a moment ago; a loaded machine may delay a probe past its bound.
    code, out, err = await eventually(
        lambda: livedash_status(env), lambda answer: answer[0] == 0, "livedash status"
    )
    for name, item in listed.items():
        [row] = [line for line in out.splitlines() if name in line]
        assert (item["role"] in row, "ready" in row, __version__ in row) == (True,) * 3, row
        assert f" {item['connections']} " in row, row
    assert "leader" in out
    assert "follower" in out

    # A stopped instance leaves the board at once.
    await second.stop()
    answer = await eventually(
        lambda: stats(first), lambda a: len(a["deployment"]["instances"]) == 1, "one instance"
    )
    assert answer["deployment"]["instances"][0]["instance"] == first_name
    code, out, err = await livedash_status(env)
    assert code == 0, out + err
    assert first_name in out, out
    assert mine not in out, out


async def test_status_without_redis_asks_the_local_instance(tmp_path: Path) -> None:
    database = tmp_path / "embedded.db"
    embedded = Settings(
        database_url=f"sqlite+aiosqlite:///{database}",
        jwt_secret="test-secret-" + "x" * 64,
        jwt_secret_file=tmp_path / "unused-secret",
        _env_file=None,  # type: ignore[call-arg]
    )
    await upgrade_async(embedded.database_url)
    users = Users(database)
    users.save("ops", Role.SUPER_ADMIN, ())
    await users.settled()
    users.close()
    operator = issue_token(embedded, "ops", Role.SUPER_ADMIN, ())
    server = await LiveServer(embedded).start()
    try:
        # Anyone learns whether it is ready; a super_admin's token adds who it is.
        anonymous = await run_status(embedded, url=server.url)
        [row] = anonymous.instances
        assert anonymous.healthy
        assert row.ready is True
        assert row.role is None
        detailed = await run_status(embedded, url=server.url, token=operator)
        [row] = detailed.instances
        assert (row.role, row.connections, row.version) == ("leader", 0, __version__)
        assert row.feed_lag_seconds is not None
        assert row.feed_lag_seconds < 5
        # Without --url: the instance on this machine, on the configured port.
        local = await run_status(embedded.model_copy(update={"port": server.port}))
        assert local.healthy
        assert local.instances[0].ready is True
    finally:
        await server.stop()
    nobody = await run_status(embedded.model_copy(update={"port": free_port()}))
    assert not nobody.healthy
    assert nobody.problem is not None
    assert "no livedash answers" in nobody.problem
    env = {**os.environ, "LIVEDASH_DATABASE_URL": embedded.database_url}
    env["LIVEDASH_PORT"] = str(free_port())
    env.pop("LIVEDASH_REDIS_URL", None)
    code, out, err = await livedash_status(env)
    assert code == 1, out + err
    assert "no livedash answers" in err, out + err
