"""`livedash serve` in its own process, started as an operator would, with the test's settings.

It is ready when it prints READY_LINE (awaited, not polled); its output goes to `log`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from livedash.settings import Settings
from livedash.testing.servers import free_port
from tests.support.probes import health

READY_LINE = "livedash serving on"

ServeProcess = Callable[..., Awaitable["Instance"]]
"""The `serve_process` fixture: start an `Instance` (with `env` on top of the test's settings)."""


class Instance:
    """`livedash serve` in its own process; `token`, a super_admin's, reads its `/health`."""

    def __init__(
        self,
        settings: Settings,
        log: Path,
        token: str,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.env = {
            **os.environ,
            "LIVEDASH_DATABASE_URL": settings.database_url,
            **({"LIVEDASH_REDIS_URL": settings.redis_url} if settings.redis_url else {}),
            "LIVEDASH_FEED_SLOT": settings.feed_slot,
            "LIVEDASH_JWT_SECRET": settings.signing_key(),
            "LIVEDASH_TIMEZONE": settings.timezone,
            **(
                {"LIVEDASH_ALERT_RULES_FILE": str(settings.alert_rules_file)}
                if settings.alert_rules_file is not None
                else {}
            ),
            "LIVEDASH_LEADER_POLL_SECONDS": "0.2",
            "LIVEDASH_SHUTDOWN_GRACE_SECONDS": "1",
            # A long-poll is answered by the next ping at the latest: short ones let a polling
            # client disconnect (and an instance stop) without waiting 25 s.
            "LIVEDASH_PING_INTERVAL_SECONDS": "1",
            "LIVEDASH_PING_TIMEOUT_SECONDS": "2",
            **(env or {}),
        }
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Instance:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "livedash", "serve", "--port", str(self.port),
            env=self.env, stdout=asyncio.subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        assert self.process.stdout is not None
        seen: list[str] = []
        async with asyncio.timeout(60):
            while True:
                line = (await self.process.stdout.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("the instance exited during start-up:\n" + "".join(seen))
                seen.append(line)
                if READY_LINE in line:
                    break
        self._drain = asyncio.create_task(self._keep_reading())
        return self

    async def _keep_reading(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        with self.log.open("ab") as log:
            while line := await self.process.stdout.readline():
                log.write(line)

    async def health(self) -> dict[str, Any]:
        return await health(self.url, self.token)

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await self.process.wait()
            except TimeoutError:
                await self.kill()
