"""The behaviour suite's Discord harness drives the real adapter as the suite expects."""

from __future__ import annotations

import pytest

from bot.commands import HELP_TEXT, NOT_ADMIN, format_stats
from bot.manager import ConversationManager
from bot.types import ConversationKey
from tests.behaviour.discord_harness import discord_harness
from tests.behaviour.harness import ADMIN, ADMIN_IDS
from tests.conftest import make_core
from tests.discord.payloads import CHANNEL_ID

pytestmark = pytest.mark.model

GENERAL = ConversationKey("discord", str(CHANNEL_ID))


async def test_harness_plays_messages_and_commands(manager: ConversationManager) -> None:
    core = make_core(manager, ADMIN_IDS)
    async with discord_harness(core) as discord:
        (answer,) = await discord.message("What is the capital of France?")
        assert "Paris" in answer
        assert await discord.message("nobody asked you", addressed=False) == []
        assert await discord.command("help") == [HELP_TEXT]
        assert await discord.command("export", "int4") == [NOT_ADMIN.format(command="export")]
        assert await discord.command("export", "help", user=ADMIN) == ["Model export is not available in this bot."]
        (stats,) = await discord.command("stats")
        assert stats.splitlines()[0] == format_stats(manager.last_stats(GENERAL), manager.model_name)
        assert await discord.command("reset") == ["Conversation forgotten (2 messages)."]
        (asked,) = await discord.command("ask", "What is the capital of France?")
        assert "Paris" in asked


async def test_harness_stops_while_answering(manager: ConversationManager) -> None:
    async with discord_harness(make_core(manager, ADMIN_IDS)) as discord:
        (answer,) = await discord.stop_while_answering("Write a short poem about the sea.")
    assert answer
