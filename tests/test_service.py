"""`livedash serve` as an orchestrator runs it: started, then stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
import time
from pathlib import Path

import socketio

from livedash.auth.tokens import issue_token
from livedash.service import YOUNG_COLLECTION_THRESHOLD
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.recorder import Recorder
from tests.support.service import InProcessService


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_sigterm_hands_clients_over_and_exits_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "LIVEDASH_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'hospital.db'}",
        "LIVEDASH_JWT_SECRET_FILE": str(tmp_path / "secret"),
        "LIVEDASH_CHECK_USERS": "false",
        "LIVEDASH_LOG_LEVEL": "warning",
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "livedash", "serve", "--port", str(port)),
        cwd=tmp_path,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    client = socketio.AsyncClient(reconnection=False)
    screen = Recorder(client)
    try:
        async with asyncio.timeout(60):
            while b"livedash serving on" not in (line := await process.stderr.readline()):
                assert line, "the service exited before serving"
        settings = Settings(jwt_secret_file=tmp_path / "secret", _env_file=None)  # type: ignore[call-arg]
        token = issue_token(settings, "screen", Role.VIEWER, ("ED",))
        await client.connect(
            f"http://127.0.0.1:{port}", auth={"token": token}, transports=["websocket"]
        )
        await screen.next("authenticated")

        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        status = await screen.next("connection_status", lambda s: s["status"] == "draining")
        assert status["authenticated"] is True
        async with asyncio.timeout(5):
            await screen.disconnected.wait()
        async with asyncio.timeout(10):
            assert await process.wait() == 0
        assert time.monotonic() - signalled < 5.0  # the default shutdown grace
    finally:
        await client.disconnect()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_once_serving_the_collector_skips_start_up_objects_and_young_passes_are_rarer(
    settings: Settings,
) -> None:
    middle_and_old = gc.get_threshold()[1:]
    service = await InProcessService(settings).start()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *middle_and_old)
    finally:
        await service.stop()
