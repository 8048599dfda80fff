"""Each user's notification preferences, and what they allow for one alert.

Defaults (a user who never chose): in-app only, MEDIUM and above, every department the user
may see, no quiet hours, at most 30 e-mails or pushes an hour.

- The in-app history records every notification the user's severity and departments allow:
  it is the record, and the bell's count.
- Quiet hours and the hourly cap hold back e-mail and push only, and never a CRITICAL alert
  or an escalation: those reach the user whatever the hour.
- An escalation ignores the severity and department filters: it is addressed to the user
  because of their role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, time

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.store.engine import write_locking
from livedash.store.models import AlertSeverity, NotificationPreference

IN_APP, EMAIL, PUSH = "in_app", "email", "push"
_SEVERITY_ORDER = {AlertSeverity.LOW: 0, AlertSeverity.MEDIUM: 1, AlertSeverity.HIGH: 2}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def severity_rank(severity: str) -> int:
    """LOW 0 ... CRITICAL 3; an unknown severity counts as the highest (never dropped)."""
    try:
        return _SEVERITY_ORDER.get(AlertSeverity(severity), 3)
    except ValueError:
        return 3


class Preferences(BaseModel):
    """A user's notification preferences (the REST API's body too)."""

    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(default_factory=lambda: [IN_APP])
    min_severity: AlertSeverity = AlertSeverity.MEDIUM
    departments: list[str] | None = None
    """Department codes; `null`: every department the user may see."""
    quiet_from: time | None = None
    quiet_until: time | None = None
    max_per_hour: int = Field(default=30, ge=1, le=1000)
    email: str | None = Field(default=None, max_length=254)

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: list[str]) -> list[str]:
        unknown = sorted(set(channels) - {IN_APP, EMAIL, PUSH})
        if unknown:
            raise ValueError(f"unknown channel {unknown[0]!r}: use in_app, email or push")
        return sorted(set(channels))

    @field_validator("email")
    @classmethod
    def _email(cls, email: str | None) -> str | None:
        if email is not None and not _EMAIL.match(email):
            raise ValueError(f"{email!r} is not an e-mail address")
        return email

    @model_validator(mode="after")
    def _consistent(self) -> Preferences:
        if (self.quiet_from is None) != (self.quiet_until is None):
            raise ValueError("quiet_from and quiet_until go together")
        if EMAIL in self.channels and self.email is None:
            raise ValueError("the email channel needs an email address")
        return self

    def quiet_at(self, local: time) -> bool:
        """Whether `local` (the hospital's time of day) is in the quiet hours."""
        if self.quiet_from is None or self.quiet_until is None:
            return False
        if self.quiet_from <= self.quiet_until:
            return self.quiet_from <= local < self.quiet_until
        return local >= self.quiet_from or local < self.quiet_until  # across midnight

    def channels_for(
        self,
        *,
        severity: str,
        department: str | None,
        escalation: bool,
        local: time,
        sent_this_hour: int,
    ) -> set[str]:
        """The channels one notification goes to (see the module's docstring)."""
        if not escalation:
            if severity_rank(severity) < severity_rank(self.min_severity):
                return set()
            if self.departments is not None and department not in self.departments:
                return set()
        chosen = set(self.channels)
        urgent = escalation or severity == AlertSeverity.CRITICAL.value
        if not urgent and (self.quiet_at(local) or sent_this_hour >= self.max_per_hour):
            chosen &= {IN_APP}
        return chosen


async def load_preferences(
    connection: AsyncConnection, usernames: Iterable[str]
) -> dict[str, Preferences]:
    """Each user's preferences; the defaults for a user who never chose."""
    names = list(usernames)
    found = {name: Preferences() for name in names}
    if not names:
        return found
    rows = await connection.execute(
        select(*NotificationPreference.__table__.c).where(
            NotificationPreference.username.in_(names)
        )
    )
    for row in rows.mappings():
        found[row["username"]] = Preferences(
            channels=row["channels"],
            min_severity=AlertSeverity(row["min_severity"]),
            departments=row["departments"],
            quiet_from=time.fromisoformat(row["quiet_from"]) if row["quiet_from"] else None,
            quiet_until=time.fromisoformat(row["quiet_until"]) if row["quiet_until"] else None,
            max_per_hour=row["max_per_hour"],
            email=row["email"],
        )
    return found


async def save_preferences(database: AsyncEngine, username: str, preferences: Preferences) -> None:
    values = {
        "channels": preferences.channels,
        "min_severity": preferences.min_severity.value,
        "departments": preferences.departments,
        "quiet_from": preferences.quiet_from.strftime("%H:%M") if preferences.quiet_from else None,
        "quiet_until": (
            preferences.quiet_until.strftime("%H:%M") if preferences.quiet_until else None
        ),
        "max_per_hour": preferences.max_per_hour,
        "email": preferences.email,
        "updated_at": datetime.now(UTC).replace(tzinfo=None),
    }
    async with write_locking(database).begin() as connection:
        changed = await connection.execute(
            update(NotificationPreference)
            .where(NotificationPreference.username == username)
            .values(**values)
        )
        if changed.rowcount == 0:
            await connection.execute(
                insert(NotificationPreference).values(username=username, **values)
            )
