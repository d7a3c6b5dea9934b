"""Admin actions adapters can trigger; the platform decides who is an admin."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger("bot.audit")

ProgressCallback = Callable[[str], Awaitable[None]]

EXPORT_UNAVAILABLE = "Model export is not available yet in this build."


class AdminActions(Protocol):
    """What an admin can ask the bot to do from any platform."""

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        """Re-export the model as ``argument`` describes; return the final message for the admin.

        ``progress`` receives human-readable progress lines while the export runs.
        """


class NoAdminActions:
    """Used until model export exists: every admin action says it is not available."""

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        log.info("export requested by %s (%r): not available", requested_by, argument)
        return EXPORT_UNAVAILABLE


def audit_refusal(platform: str, user: str, action: str) -> None:
    """Record that a non-admin asked for an admin-only action."""
    log.warning("refused %s for non-admin %s on %s", action, user, platform)
