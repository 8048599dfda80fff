"""One connected socket's state, and the lock that keeps it whole.

The gateway keeps a `ClientSession` per Socket.IO session, by sid, from its connect to its
disconnect; every part of the gateway (the guard, identities, subscriptions, resync) is handed
that same table. Who a socket is and what it is subscribed to change only under the
session's `lock`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from livedash.auth.tokens import Principal
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
    alert_scopes: set[str | None] = field(default_factory=set)  # alert rooms it is in
    user_room: str | None = None  # whose notifications it receives

    def cancel_timer(self) -> None:
        """Stop the sign-in timeout or token expiry, if one is armed."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
