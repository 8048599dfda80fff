"""The outbound senders of e-mail and Web Push, where the settings configure them."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import cast

from livedash.errors import ConfigurationError
from livedash.notifications.email import EmailSender, TlsMode
from livedash.notifications.push import PushSender
from livedash.settings import Settings


def email_sender(settings: Settings) -> EmailSender | None:
    """The SMTP sender of `settings`, or None without an SMTP host."""
    if settings.smtp_host is None:
        return None
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    return EmailSender(
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_sender,
        username=settings.smtp_username,
        password=password,
        tls=cast(TlsMode, settings.smtp_tls),
        timeout=settings.smtp_timeout_seconds,
    )


async def push_sender(stack: AsyncExitStack, settings: Settings) -> PushSender | None:
    """The Web Push sender of `settings` (open until `stack` closes), or None without a key."""
    path = settings.vapid_private_key_file
    if path is None:
        return None
    try:
        key = path.read_text()
    except OSError as error:
        raise ConfigurationError(f"cannot read the VAPID key at {path}: {error}") from error
    sender = PushSender(key, settings.vapid_subject)
    return await stack.enter_async_context(sender)
