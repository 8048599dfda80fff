"""Circuit breakers around the database and Redis.

Written here rather than taken from a library: the maintained asyncio breakers (aiobreaker,
purgatory) wrap one call at a time, while ours must also be fed by loops that retry on their
own (the change feed's tenacity loop, the leader's lock connection, the Redis prober) and must
tell listeners when the state changes, so that clients hear "degraded" at once. That is a
few dozen lines of state machine.

closed: calls go through. After `failure_threshold` failures in a row: open, calls are
refused at once (fast failure instead of a timeout per request). After `reset_timeout`
seconds: half-open, one trial call goes through; its success closes the breaker, its failure
opens it again. `trip` opens it at once, for a failure that lost a write.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


Listener = Callable[["CircuitBreaker"], None]


class CircuitBreaker:
    """One dependency's breaker."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 2,
        reset_timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._threshold = failure_threshold
        self._reset_timeout = reset_timeout
        self._clock = clock
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False
        self.last_error: str | None = None
        self.down_since: float | None = None  # wall clock, when it first opened
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def state(self) -> State:
        if self._state is State.OPEN and self._clock() - self._opened_at >= self._reset_timeout:
            return State.HALF_OPEN
        return self._state

    def allow(self) -> bool:
        """Whether a call may go through now (in half-open: one trial at a time)."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._trial_running = False
        if self._state is not State.CLOSED:
            self._set(State.CLOSED)
            self.last_error = None
            self.down_since = None

    def failure(self, error: BaseException | str) -> None:
        self._failures += 1
        self._trial_running = False
        self.last_error = str(error) or type(error).__name__
        if self._state is State.OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock()
            if self._state is not State.OPEN:
                self.down_since = time.time()
                self._set(State.OPEN)

    def trip(self, error: BaseException | str) -> None:
        """Open at once: a write was lost (not just slow), and recovery must resend it."""
        self._failures = max(self._failures, self._threshold - 1)
        self.failure(error)

    def _set(self, state: State) -> None:
        log.warning(
            "circuit_breaker", dependency=self.name, state=state.value, error=self.last_error
        )
        self._state = state
        for listener in self._listeners:
            listener(self)

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "last_error": self.last_error,
            "down_since": self.down_since,
        }
