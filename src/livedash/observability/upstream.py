"""The hospital's main application, as livedash sees it: its health URL, polled.

livedash reads the main application's database, never the application itself, so a main
application that is down does not stop livedash: its figures simply stop moving, because
nothing writes. Operators still want to see it beside livedash's own health, so every
instance polls `LIVEDASH_MAIN_APP_HEALTH_URL` in the background, every
`main_app_poll_seconds`, each request bounded by `main_app_timeout_seconds`; a 2xx answer is
up, anything else (another status, a timeout, a refused connection) is down, with the reason.
A circuit breaker stops the polls for a while after failures in a row, so that a main
application that hangs costs one timeout per `reset_timeout`, not one per poll. Nothing
waits for a poll: requests read the last result.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import structlog

from livedash.aio import BackgroundTasks
from livedash.observability.breaker import CircuitBreaker
from livedash.observability.readiness import Check

log = structlog.get_logger(__name__)

BREAKER_NAME = "main_app"
FAILURES_TO_OPEN = 2
RESET_POLLS = 3
"""While the breaker is open, this many poll intervals pass before the next trial."""
NOT_REQUIRED = (
    "never makes livedash not ready: livedash reads the database, and serves its own data "
    "while the main application is down"
)


class UpstreamPoller:
    """The main application's health URL, polled in the background; `async with` polls."""

    def __init__(
        self,
        url: str,
        *,
        interval: float,
        timeout: float,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self._interval = interval
        self._timeout = timeout
        self._client = client
        self._owns_client = client is None
        self.breaker = CircuitBreaker(
            BREAKER_NAME, failure_threshold=FAILURES_TO_OPEN, reset_timeout=interval * RESET_POLLS
        )
        self.up: bool | None = None
        """True after a 2xx answer, False after a failure; None before the first poll."""
        self.reason = "not polled yet"
        self.checked_at: datetime | None = None
        self._changed = asyncio.Event()
        self._tasks = BackgroundTasks()

    async def __aenter__(self) -> UpstreamPoller:
        if self._client is None:
            # No redirects (a health URL that redirects is a misconfiguration to see) and no
            # proxy from the environment: the main application is on the hospital's network.
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self._tasks.spawn(self._poll_periodically(), name="main-app-poll")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._tasks.close()
        if self._owns_client and self._client is not None:
            await self._client.aclose()

    async def poll(self) -> None:
        """Ask the main application once (unless its breaker is open) and record the answer."""
        breaker = self.breaker
        if not breaker.allow():
            self._record(False, f"{breaker.last_error} (not asked while its circuit is open)")
            return
        up, reason = await self._ask()
        if up:
            breaker.success()
        else:
            breaker.failure(reason)
        self._record(up, reason)

    async def _ask(self) -> tuple[bool, str]:
        """Whether the health URL answered 2xx within the timeout, and what it answered."""
        client = self._client
        if client is None:
            raise RuntimeError("the main application's poller is used outside `async with`")
        try:
            async with asyncio.timeout(self._timeout):
                response = await client.get(self.url, timeout=self._timeout)
        except (TimeoutError, httpx.TimeoutException):
            return False, f"no answer within {self._timeout:g} s"
        except httpx.HTTPError as error:
            return False, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        return response.is_success, f"answered HTTP {response.status_code}"

    def _record(self, up: bool, reason: str) -> None:
        self.checked_at = datetime.now(UTC)
        self.reason = reason
        if up is self.up:
            return
        if up:
            log.info("main_app_up", url=self.url)
        else:
            log.warning("main_app_down", url=self.url, reason=reason)
        self.up = up
        # Wake every waiter of `changes`; later waiters wait on a new event.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changes(self) -> AsyncIterator[bool | None]:
        """`up` now, then each time it changes."""
        while True:
            changed = self._changed
            yield self.up
            await changed.wait()

    def as_dict(self) -> dict[str, object]:
        """The last poll, for operators (JSON-ready)."""
        return {
            "url": self.url,
            "up": self.up,
            "reason": self.reason,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "breaker": self.breaker.as_dict(),
        }

    def check(self) -> Check:
        """Readiness's `main_app` check: reported, never required."""
        up = self.up is True
        return Check(BREAKER_NAME, up, self.reason, False, {**self.as_dict(), "note": NOT_REQUIRED})

    async def _poll_periodically(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # never stop polling: the reading would freeze at its last value
                log.exception("main_app_poll_failed_unexpectedly")
            await asyncio.sleep(self._interval)


@contextlib.asynccontextmanager
async def polled(
    url: str | None, *, interval: float, request_timeout: float
) -> AsyncIterator[UpstreamPoller | None]:
    """A running poller of `url`; None when no URL is configured."""
    if url is None:
        yield None
        return
    async with UpstreamPoller(url, interval=interval, timeout=request_timeout) as poller:
        yield poller
