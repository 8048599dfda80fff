"""A user's notifications under `/api/notifications`: the history (pages, newest first) with
its unread count, marking read, and the preferences. Each user sees and changes only their
own."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field

from livedash.auth.scope import visible_departments
from livedash.errors import InvalidPayload
from livedash.notifications.inbox import MAX_LISTED, forget_push, register_push
from livedash.notifications.messages import NotificationMessage
from livedash.notifications.preferences import Preferences, load_preferences, save_preferences
from livedash.notifications.push import PushSubscription
from livedash.web.api import ERROR_RESPONSES, Caller
from livedash.web.deps import services
from livedash.web.pagination import Page, PageRequest, pages

NotificationPages = Annotated[PageRequest[int], Depends(pages(50, MAX_LISTED, int))]


class NotificationPage(Page[NotificationMessage]):
    """A page of the caller's notifications, and how many of all of them are unread."""

    unread: int


class Marked(BaseModel):
    marked: int


class PushKeys(BaseModel):
    p256dh: str = Field(max_length=200)
    auth: str = Field(max_length=100)


class PushSubscriptionBody(BaseModel):
    """A browser's `PushSubscription.toJSON()`."""

    endpoint: str = Field(max_length=1000)
    keys: PushKeys


class Registered(BaseModel):
    id: int


class PushKey(BaseModel):
    """The application server key browsers subscribe with (`null`: push is not set up)."""

    public_key: str | None


def install_notifications_api(app: FastAPI) -> None:
    router = APIRouter(
        prefix="/api/notifications", tags=["notifications"], responses=ERROR_RESPONSES
    )

    @router.get("")
    async def notifications(
        request: Request, caller: Caller, page: NotificationPages, unread_only: bool = False
    ) -> NotificationPage:
        """The caller's notifications, newest first, and how many are unread."""
        inbox = services(request).inbox
        unread, rows = await inbox.listed(
            caller.subject, unread_only=unread_only, before=page.after, limit=page.fetch
        )
        listed = page.of(rows, lambda notification: notification.id)
        return NotificationPage(items=listed.items, next=listed.next, unread=unread)

    @router.post("/read")
    async def read_all(request: Request, caller: Caller) -> Marked:
        """Mark every notification of the caller read."""
        return Marked(marked=await services(request).inbox.mark_read(caller.subject))

    @router.post("/{notification_id}/read")
    async def read_one(request: Request, caller: Caller, notification_id: int) -> Marked:
        """Mark one of the caller's notifications read."""
        marked = await services(request).inbox.mark_read(caller.subject, notification_id)
        return Marked(marked=marked)

    @router.get("/preferences")
    async def preferences(request: Request, caller: Caller) -> Preferences:
        """The caller's notification preferences (the defaults until they choose)."""
        async with services(request).database.connect() as connection:
            return (await load_preferences(connection, [caller.subject]))[caller.subject]

    @router.put("/preferences")
    async def set_preferences(request: Request, caller: Caller, body: Preferences) -> Preferences:
        """Replace the caller's notification preferences."""
        if body.departments is not None:
            known = await services(request).view.departments()
            visible = visible_departments(caller, known)
            hidden = sorted(code for code in body.departments if code not in visible)
            if hidden:
                raise InvalidPayload(f"departments: {hidden[0]!r} is not a department you may see")
        await save_preferences(services(request).database, caller.subject, body)
        return body

    @router.get("/push/key")
    async def push_key(request: Request, caller: Caller) -> PushKey:
        """The VAPID public key for `PushManager.subscribe`."""
        return PushKey(public_key=services(request).deliveries.application_server_key)

    @router.post("/push/subscriptions")
    async def subscribe(request: Request, caller: Caller, body: PushSubscriptionBody) -> Registered:
        """Register this browser for Web Push (one per user and device)."""
        found = services(request)
        try:
            subscription = PushSubscription.from_json(
                body.model_dump(), allow_http=found.settings.push_allow_http
            )
        except ValueError as error:
            raise InvalidPayload(f"subscription: {error}") from error
        settings = found.settings
        if not settings.push_allow_http and not _known_service(
            subscription.service, settings.push_service_hosts
        ):
            raise InvalidPayload(
                f"endpoint: {subscription.service!r} is not a push service this deployment "
                "uses (LIVEDASH_PUSH_SERVICE_HOSTS)"
            )
        return Registered(id=await register_push(found.database, caller.subject, subscription))

    @router.delete("/push/subscriptions/{subscription_id}")
    async def unsubscribe(request: Request, caller: Caller, subscription_id: int) -> Marked:
        """Forget one of the caller's browsers."""
        removed = await forget_push(services(request).database, caller.subject, subscription_id)
        return Marked(marked=removed)

    app.include_router(router)


def _known_service(host: str, allowed: list[str]) -> bool:
    return any(host == name or (name.startswith(".") and host.endswith(name)) for name in allowed)
