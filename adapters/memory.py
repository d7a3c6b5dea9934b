"""An in-memory adapter: whole-bot tests in one line each (in the spirit of errbot's)."""

from __future__ import annotations

from bot.commands import dispatch
from bot.manager import ConversationManager
from bot.types import ConversationKey


class MemoryAdapter:
    """Sends messages straight to the manager and returns what the bot would post."""

    def __init__(self, manager: ConversationManager, platform: str = "memory") -> None:
        self.manager = manager
        self.platform = platform

    def key(self, channel: str = "general", thread: str | None = None) -> ConversationKey:
        """The conversation key a message in ``channel``/``thread`` belongs to."""
        return ConversationKey(self.platform, channel, thread)

    async def say(self, text: str, channel: str = "general", thread: str | None = None) -> str:
        """Post ``text`` and return the bot's whole answer."""
        result = await dispatch(self.manager, self.key(channel, thread), text)
        return result if isinstance(result, str) else await result.complete()

    async def chunks(self, text: str, channel: str = "general", thread: str | None = None) -> list[str]:
        """Post ``text`` and return the answer as the streamed chunks."""
        result = await dispatch(self.manager, self.key(channel, thread), text)
        if isinstance(result, str):
            return [result]
        return [chunk async for chunk in result]
