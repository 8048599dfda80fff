"""Sockets that take their updates batched, grouped by exactly what they subscribe to.

A socket that asked for `dashboard_updates` (its handshake's `auth.updates: "batched"`) gets
one frame per send of the outbox, carrying every changed value it is subscribed to, instead of
a frame per value: a dashboard that shows a department's every figure would otherwise take a
dozen frames for one admitted patient. Sockets subscribed to the same set of scopes are one
group, and a group is one Socket.IO room. A send's values are sorted into groups through an
index from each scope to the groups that hold it, so the work is per changed value and per
group, never per socket; each group's batch is then encoded once and written to its sockets
(frames.py). Screens of one ward mostly watch the same things, so groups are few.

Membership follows python-socketio's own rooms (`FrameManager` tells `entered` and `left`),
so a disconnect leaves a group as it leaves every other room.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from livedash.realtime.clients import Scope

GROUP_ROOM_PREFIX = "batched|"


class SubscriberGroups:
    """The groups of one process's batched sockets, by the scopes they subscribe to."""

    def __init__(self) -> None:
        self._room_of: dict[frozenset[Scope], str] = {}
        self._scopes_of: dict[str, frozenset[Scope]] = {}
        self._members: dict[str, int] = {}
        self._rooms_by_scope: dict[Scope, set[str]] = {}
        self._numbers = itertools.count(1)

    def room_for(self, scopes: frozenset[Scope]) -> str:
        """The room of the group subscribed to exactly `scopes` (made if there is none)."""
        room = self._room_of.get(scopes)
        if room is None:
            room = f"{GROUP_ROOM_PREFIX}{next(self._numbers)}"
            self._room_of[scopes] = room
            self._scopes_of[room] = scopes
            self._members[room] = 0
            for scope in scopes:
                self._rooms_by_scope.setdefault(scope, set()).add(room)
        return room

    def entered(self, room: Any) -> None:
        """A socket joined `room` (any room: others are not counted)."""
        if room in self._members:
            self._members[room] += 1

    def left(self, room: Any) -> None:
        """A socket left `room`; a group left by its last socket is forgotten."""
        members = self._members.get(room)
        if members is None:
            return
        if members > 1:
            self._members[room] = members - 1
            return
        scopes = self._scopes_of.pop(room)
        del self._members[room], self._room_of[scopes]
        for scope in scopes:
            rooms = self._rooms_by_scope[scope]
            rooms.discard(room)
            if not rooms:
                del self._rooms_by_scope[scope]

    def batches(self, updates: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Each group's share of `updates` (in their order), by room; groups with none left out."""
        shares: dict[str, list[dict[str, Any]]] = {}
        for update in updates:
            rooms = self._rooms_by_scope.get((update["metric"], update["department"]))
            if rooms is None:
                continue
            for room in rooms:
                share = shares.get(room)
                if share is None:
                    shares[room] = [update]
                else:
                    share.append(update)
        return shares

    def __contains__(self, room: object) -> bool:
        return room in self._members

    def __len__(self) -> int:
        return len(self._members)
