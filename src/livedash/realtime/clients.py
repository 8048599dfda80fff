"""One connected socket's state, and the lock that keeps it whole.

The gateway keeps a `ClientSession` per Socket.IO session, by sid, from its connect to its
disconnect; every part of the gateway (the guard, identities, subscriptions, resync) is handed
that same table. Who a socket is and what it is subscribed to change only under the
session's `lock`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from livedash.auth.tokens import Principal
from livedash.metrics.definitions import METRICS, Tier
from livedash.realtime.schemas import StreamPosition

Scope = tuple[str, str | None]
"""A subscription: a metric and a department code (None: the hospital-wide totals)."""


@dataclass
class ClientSession:
    """One connected socket's state.

    `lock` serialises what changes who the socket is and what it is subscribed to (events,
    token expiry, the periodic recheck): a subscription that awaits while the identity
    changes would otherwise join rooms of the identity it started with.
    """

    sid: str
    principal: Principal | None = None
    claims: Principal | None = None  # the token's own claims, before the users table narrows
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscriptions: set[Scope] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None  # the sign-in timeout, or the token's expiry
    since: StreamPosition | None = None  # from the handshake, for the first subscription
    batched: bool = False  # takes `dashboard_updates` (asked in the handshake), not one per value
    alert_scopes: set[str | None] = field(default_factory=set)  # alert rooms it is in
    user_room: str | None = None  # whose notifications it receives
    tiers: Counter[Tier] = field(default_factory=Counter)  # its subscriptions, by tier
    gone: bool = False  # disconnected: a subscription still under way is not counted

    def cancel_timer(self) -> None:
        """Stop the sign-in timeout or token expiry, if one is armed."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(frozen=True, slots=True)
class TierCount:
    """Who is subscribed to one tier's metrics."""

    subscribers: int
    """Sockets subscribed to at least one of its metrics."""
    subscriptions: int
    """(metric, department) subscriptions to its metrics, over every socket."""


@dataclass(frozen=True, slots=True)
class SocketStats:
    """Who is connected to one instance, and subscribed to what."""

    connections: int
    """Socket.IO sessions."""
    authenticated: int
    """Sessions signed in."""
    transports: int
    """Engine.IO connections, with a session or not."""
    tiers: dict[Tier, TierCount]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "tiers": {t.value: asdict(c) for t, c in self.tiers.items()}}


class Subscribers:
    """Subscriptions by tier, over every session, kept as they change (read in O(tiers))."""

    def __init__(self) -> None:
        self._subscribers: Counter[Tier] = Counter()
        self._subscriptions: Counter[Tier] = Counter()

    def add(self, session: ClientSession, scope: Scope) -> None:
        """Subscribe `session` to `scope`."""
        if scope not in session.subscriptions and not session.gone:
            session.subscriptions.add(scope)
            self._count(session, METRICS[scope[0]].tier, 1)

    def discard(self, session: ClientSession, scope: Scope) -> None:
        """Unsubscribe `session` from `scope`, if it is subscribed."""
        if scope in session.subscriptions:
            session.subscriptions.discard(scope)
            self._count(session, METRICS[scope[0]].tier, -1)

    def forget(self, session: ClientSession) -> None:
        """`session` is gone, and its subscriptions with it."""
        session.gone = True
        for scope in list(session.subscriptions):
            self.discard(session, scope)

    def by_tier(self) -> dict[Tier, TierCount]:
        """Subscribers and subscriptions of every tier, now."""
        return {
            tier: TierCount(self._subscribers[tier], self._subscriptions[tier]) for tier in Tier
        }

    def _count(self, session: ClientSession, tier: Tier, change: int) -> None:
        before = session.tiers[tier]
        session.tiers[tier] = before + change
        self._subscriptions[tier] += change
        if (before == 0) != (before + change == 0):
            self._subscribers[tier] += change
