"""The names of the Socket.IO rooms the gateway sends to."""

from __future__ import annotations

UPDATES_ROOM = "livedash|updates"
"""Not a room any socket joins: an emit to it carries one send of the outbox's values, which
each process's manager sorts into the groups of its batched sockets (frames.py)."""


_METRIC_ROOM = "metric|"


def room_name(metric: str, department: str | None) -> str:
    """The room of one metric's updates for one department (or the hospital)."""
    return f"{_METRIC_ROOM}{metric}|" + ("hospital" if department is None else f"dept:{department}")


def is_metric_room(room: object) -> bool:
    """Whether `room` is one made by `room_name`."""
    return isinstance(room, str) and room.startswith(_METRIC_ROOM)


def alert_room(department: str | None) -> str:
    """The room of one department's alerts (or the hospital's): every socket whose identity
    may see that department is in it."""
    return "alerts|" + ("hospital" if department is None else f"dept:{department}")


def user_room(username: str) -> str:
    """The room of one user's own sockets (their notifications)."""
    return f"user|{username}"
