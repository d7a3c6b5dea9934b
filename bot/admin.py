"""Who may run admin commands, the audit record, and the admin actions the core can run."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Protocol

from bot.types import Identity

audit = logging.getLogger("bot.audit")

ProgressCallback = Callable[[str], Awaitable[None]]

EXPORT_UNAVAILABLE = "Model export is not available in this bot."
# With model servers (BOT_ENGINE_URL) a new model is exported where they read it and served by restarting them.
EXPORT_ON_SERVERS = (
    "This bot's model is served by model servers (BOT_ENGINE_URL): export a new one with "
    "`bot export --for-ovms` where the servers read it, then restart them and the bot."
)


class AdminActions(Protocol):
    """What an admin can ask the bot to do from any platform."""

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        """Re-export the model as ``argument`` describes; return the final message for the admin.

        ``progress`` receives human-readable progress lines while the export runs.
        """


class NoAdminActions:
    """For bots without model export: every admin action says it is not available (and why, as ``reason``)."""

    def __init__(self, reason: str = EXPORT_UNAVAILABLE) -> None:
        self._reason = reason

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        audit.info("export requested by %s (%r): not available", requested_by, argument)
        return self._reason


class AdminPolicy:
    """Admins are listed per platform by user or role id; a trusted platform (the console) is all admins.

    Ids are only compared within their own platform, so a Slack member id can never
    make a Discord user an admin.  Adapters leave out roles everybody has (Discord's
    @everyone role, whose id is the server's).
    """

    def __init__(self, admin_ids: Mapping[str, Collection[str]], trusted_platforms: Collection[str] = ()) -> None:
        self._admin_ids = {platform: frozenset(ids) for platform, ids in admin_ids.items()}
        self._trusted = frozenset(trusted_platforms)

    def allows(self, who: Identity) -> bool:
        """Whether ``who`` may run admin commands."""
        if who.platform in self._trusted:
            return True
        listed = self._admin_ids.get(who.platform, frozenset())
        return who.user_id in listed or not listed.isdisjoint(who.role_ids)


def audit_refusal(who: Identity, action: str) -> None:
    """Record that a non-admin asked for an admin-only action."""
    audit.warning("refused %s for non-admin %s", action, who)
