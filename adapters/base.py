"""What every adapter is: a translator that feeds one core from one platform until told to stop."""

from __future__ import annotations

import asyncio
from typing import Protocol

from bot.core import Core


class PlatformStartupError(RuntimeError):
    """A platform refused to start (rejected credentials, for example); the message says why."""


class Adapter(Protocol):
    """Translates a platform's events into ``Core.submit`` calls and the core's output into the platform's API."""

    platform: str

    async def serve(self, core: Core, stop: asyncio.Event) -> None:
        """Answer on the platform until ``stop`` is set; then stop taking events, ``core.drain()`` and disconnect.

        Raises ``PlatformStartupError`` when the platform cannot be reached or refuses the credentials.
        """
