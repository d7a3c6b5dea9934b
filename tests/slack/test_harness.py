"""The behaviour suite's Slack harness keeps its contract (the suite itself runs it against every adapter)."""

from __future__ import annotations

import pytest

from bot.admin import AdminPolicy, NoAdminActions
from bot.commands import NOT_ADMIN
from bot.core import Core
from bot.manager import ConversationManager
from tests.behaviour.harness import ADMIN, ADMIN_IDS
from tests.behaviour.slack_harness import slack_harness

pytestmark = pytest.mark.model


async def test_the_harness_reports_what_the_bot_showed(manager: ConversationManager) -> None:
    core = Core(manager, AdminPolicy(ADMIN_IDS), NoAdminActions())
    async with slack_harness(core) as harness:
        assert harness.platform == "slack"
        answer = await harness.message("What is the capital of France?")
        assert len(answer) == 1 and "Paris" in answer[0]
        assert await harness.message("chatter", addressed=False) == []
        assert "/reset" in (await harness.command("help"))[0]
        assert await harness.command("export", "int4") == [NOT_ADMIN.format(command="export")]
        assert len(await harness.command("export", "int4", user=ADMIN)) == 1
        asked = await harness.command("ask", "And of Italy?")
        assert asked[0].endswith("asked: And of Italy?") and len(asked) == 2
        assert await harness.command("reset") == ["Conversation forgotten (2 messages)."]
        stopped = await harness.stop_while_answering("Write a long story about a dragon.")
        assert len(stopped) == 1 and stopped[0]
