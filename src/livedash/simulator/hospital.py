"""A simulated hospital: writes realistic activity straight into the database, event by event.

The simulator reaches the rest of livedash only through the database, as the hospital's main
application does. It remembers what it needs (free beds, waiting and admitted patients, open
shifts, appointments and bills), reloads that whenever the database turns out to have changed
under it, and guards every write so it never overwrites someone else's change.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta, tzinfo

import structlog
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.errors import ConfigurationError, StoreError
from livedash.simulator import operations, patient_flow
from livedash.simulator.rates import KINDS, Moment, event_rates, pick
from livedash.simulator.state import HospitalState, load_state
from livedash.simulator.writes import Event, StaleState
from livedash.store.engine import create_engine

log = structlog.get_logger(__name__)

EVENTS: dict[str, Event] = {
    "arrival": patient_flow.arrival,
    "admission": patient_flow.admission,
    "discharge": patient_flow.discharge,
    "transfer": patient_flow.transfer,
    "outpatient_done": patient_flow.outpatient_done,
    "bed_cleaned": patient_flow.bed_cleaned,
    "bed_out_of_service": patient_flow.bed_out_of_service,
    "bed_back_in_service": patient_flow.bed_back_in_service,
    "appointment_booked": operations.appointment_booked,
    "appointment_checked_in": operations.appointment_checked_in,
    "appointment_completed": operations.appointment_completed,
    "appointment_cancelled": operations.appointment_cancelled,
    "appointment_no_show": operations.appointment_no_show,
    "bill_created": operations.bill_created,
    "bill_paid": operations.bill_paid,
    "shift_change": operations.shift_change,
}
if tuple(EVENTS) != KINDS:  # pragma: no cover - a programming error caught at import
    raise RuntimeError("EVENTS and KINDS disagree")

STALE_ATTEMPTS = 5
"""How often one step reloads and chooses again before giving up on a changing database."""
MAX_FAILURE_BACKOFF_SECONDS = 5.0


def _system_clock() -> datetime:
    return datetime.now(UTC)


class HospitalSimulator:
    """Performs hospital events against the database at `database_url`, one transaction each.

    `clock` gives the real time (aware UTC) that rows carry; the simulated hour of day, which
    only shapes the mix of events, starts at the clock's hour in `zone` and runs `speed` times
    faster inside `run()`. The same seed, starting database and clock give the same events.
    """

    def __init__(
        self,
        database_url: str,
        *,
        seed: int = 7,
        clock: Callable[[], datetime] | None = None,
        zone: tzinfo = UTC,
    ) -> None:
        self._database_url = database_url
        self._rng = random.Random(seed)
        self._clock = clock or _system_clock
        self._zone = zone
        self._engine: AsyncEngine | None = None
        self._state: HospitalState | None = None
        self._hour = 0.0
        self._gap_seconds = 0.0

    async def __aenter__(self) -> HospitalSimulator:
        local = self._aware_now().astimezone(self._zone)
        self._hour = local.hour + local.minute / 60 + local.second / 3600
        self._engine = create_engine(self._database_url, writer=True)
        try:
            self._state = await self._load()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Dispose of the simulator's engine."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        self._state = None

    @property
    def simulated_hour(self) -> float:
        """The simulated time of day, in hours since midnight (0 <= hour < 24)."""
        return self._hour

    async def step(self) -> str:
        """Perform one hospital event in one transaction and return its kind.

        Raises `StoreError` when the database fails the transaction; the state is reloaded
        before the next step.
        """
        for _ in range(STALE_ATTEMPTS):
            kind: str | None = None
            try:
                state = self._state if self._state is not None else await self._load()
                self._state = state
                moment = self._moment()
                rates = event_rates(state, moment)
                kind = pick(self._rng, rates)
                async with self._require_engine().begin() as connection:
                    await EVENTS[kind](connection, state, self._rng, moment)
            except (StaleState, IntegrityError) as stale:
                # Another writer changed what we remembered; its change stands, ours is redone.
                log.info("simulator_state_stale", kind=kind, reason=str(stale).splitlines()[0])
                self._state = None
                continue
            except DBAPIError as error:
                log.warning("simulator_step_failed", kind=kind, error=str(error.orig))
                self._state = None
                raise StoreError(f"simulator step {kind or 'load'} failed: {error.orig}") from error
            except BaseException:
                # Cancelled half-way: the transaction rolled back, so what we remember may not.
                self._state = None
                raise
            self._advance(sum(rate for _, rate in rates))
            return kind
        raise StoreError("the database kept changing under the simulator")

    async def run(
        self,
        *,
        speed: float,
        stop: asyncio.Event,
        on_event: Callable[[str], None] | None = None,
    ) -> int:
        """Perform events at `speed` times real hospital rates until `stop` is set; the count."""
        if not speed > 0:
            raise ConfigurationError(f"simulator speed must be positive, not {speed}")
        performed = 0
        failures = 0
        log.info("simulator_started", speed=speed, hour=round(self._hour, 2))
        while not stop.is_set():
            try:
                kind = await self.step()
            except StoreError:
                failures += 1
                delay = min(0.05 * 2**failures, MAX_FAILURE_BACKOFF_SECONDS)
            else:
                failures = 0
                performed += 1
                if on_event is not None:
                    on_event(kind)
                delay = self._gap_seconds / speed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):  # not wait_for: see changefeed/sqlite.py
                    await stop.wait()
        log.info("simulator_stopped", events=performed)
        return performed

    def _require_engine(self) -> AsyncEngine:
        if self._engine is None:
            raise ConfigurationError("use the simulator inside `async with`")
        return self._engine

    def _aware_now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ConfigurationError("the simulator's clock must return aware datetimes")
        return now.astimezone(UTC)

    def _moment(self) -> Moment:
        now = self._aware_now()
        tomorrow = now.astimezone(self._zone).date() + timedelta(days=1)
        day_end = datetime.combine(tomorrow, time(), tzinfo=self._zone).astimezone(UTC)
        return Moment(now.replace(tzinfo=None), self._hour, day_end.replace(tzinfo=None))

    async def _load(self) -> HospitalState:
        async with self._require_engine().begin() as connection:
            return await load_state(connection, self._moment().day_end)

    def _advance(self, rate_per_hour: float) -> None:
        # Exponential gaps make the events a Poisson process at the current total rate.
        gap_hours = self._rng.expovariate(rate_per_hour) if rate_per_hour > 0 else 1 / 60
        self._gap_seconds = gap_hours * 3600
        self._hour = (self._hour + gap_hours) % 24
