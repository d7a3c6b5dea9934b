"""One behaviour suite, run against every adapter: the same input gets the same behaviour everywhere.

Each test drives a real adapter (in memory, the console, discord.py against the
Discord stand-in, Bolt against the Slack stand-in) over a core on the real bundled
model, through the harness interface in ``harness.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.memory import MemorySurface
from bot.admin import AdminPolicy, ProgressCallback
from bot.admission import Admission, AdmissionLimits
from bot.commands import FAILED, HELP_TEXT, NOT_ADMIN
from bot.core import Core
from bot.manager import ConversationConfig, ConversationManager
from bot.store import MemoryHistoryStore
from bot.streaming import IN_LINE_AFTER_S
from bot.surface import Kind
from bot.types import ConversationKey, Identity, Incoming
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.behaviour.conftest import HarnessFactory
from tests.behaviour.harness import ADMIN, ADMIN_IDS, MEMBER, Harness, wait_until
from tests.conftest import DEFAULT_SYSTEM_PROMPT, TEST_MAX_NEW_TOKENS, FailingEngine, RecordingEngine

PIRATE = "You are a pirate. Answer every question like a pirate would."


@dataclass
class RecordingActions:
    """Admin actions that report progress once and remember who asked for what."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        self.calls.append((requested_by, argument))
        await progress("Exporting: step 1 of 1")
        return f"Export finished for {argument or 'the default model'}."


def build_core(engine: Any, actions: RecordingActions, admission: Admission | None = None) -> Core:
    config = ConversationConfig(system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=TEST_MAX_NEW_TOKENS)
    manager = ConversationManager(EngineSlot(engine), MemoryHistoryStore(), config)
    return Core(manager, AdminPolicy(ADMIN_IDS), actions, stop_grace_s=60.0, admission=admission)


@pytest.fixture
def actions() -> RecordingActions:
    return RecordingActions()


@pytest.fixture
async def harness(adapter: HarnessFactory, engine: OpenVINOEngine, actions: RecordingActions) -> AsyncIterator[Harness]:
    async with adapter(build_core(engine, actions)) as running:
        yield running


def shown(texts: list[str]) -> str:
    return "\n".join(texts)


async def test_a_mention_is_answered(harness: Harness) -> None:
    assert "Paris" in shown(await harness.message("What is the capital of France?"))


async def test_chatter_is_ignored(harness: Harness) -> None:
    assert await harness.message("Lunch at noon, anyone?", addressed=False) == []


async def test_reset_forgets_and_the_next_answer_starts_fresh(harness: Harness) -> None:
    await harness.message("My name is Ada.")
    assert "Conversation forgotten (2 messages)." in shown(await harness.message("/reset"))
    assert shown(await harness.message("What is the capital of France?")).strip()
    assert "Conversation forgotten (2 messages)." in shown(await harness.message("/reset"))


async def test_stats_name_the_model_and_its_speed(harness: Harness) -> None:
    await harness.message("Name a colour.")
    stats = shown(await harness.message("/stats"))
    assert "SmolLM2" in stats and "tokens/s" in stats


async def test_the_platforms_own_commands_share_one_conversation(harness: Harness) -> None:
    assert "Paris" in shown(await harness.command("ask", "What is the capital of France?"))
    assert "tokens/s" in shown(await harness.command("stats"))
    assert "Conversation forgotten (2 messages)." in shown(await harness.command("reset"))
    assert "No reply in this conversation yet." in shown(await harness.command("stats"))


async def test_export_by_a_member_is_refused_and_audited(
    harness: Harness, actions: RecordingActions, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.audit"):
        answer = shown(await harness.command("export", "help", user=MEMBER))
    assert NOT_ADMIN.format(command="export") in answer
    assert actions.calls == []
    assert any(f"refused /export for non-admin {harness.platform}:" in r.getMessage() for r in caplog.records)


async def test_export_by_an_admin_runs_with_progress(harness: Harness, actions: RecordingActions) -> None:
    answer = shown(await harness.command("export", "help", user=ADMIN))
    assert "Exporting: step 1 of 1" in answer and "Export finished for help." in answer
    assert actions.calls == [(f"{harness.platform}:{ADMIN_IDS[harness.platform][0]}", "help")]


async def test_a_persona_is_set_by_admins_and_shapes_the_next_answer(
    adapter: HarnessFactory, engine: OpenVINOEngine, actions: RecordingActions
) -> None:
    recording = RecordingEngine(engine)
    async with adapter(build_core(recording, actions)) as harness:
        refused = shown(await harness.command("persona", PIRATE, user=MEMBER))
        assert NOT_ADMIN.format(command="persona") in refused
        assert PIRATE in shown(await harness.command("persona", PIRATE, user=ADMIN))
        await harness.message("What is the capital of France?")
        assert PIRATE in recording.prompts[-1].split("capital of France", 1)[0]
        assert PIRATE in shown(await harness.command("persona", user=MEMBER))


async def test_a_mention_alone_gets_the_help(harness: Harness) -> None:
    answer = shown(await harness.message(""))
    assert HELP_TEXT.splitlines()[1] in answer


async def test_a_typed_export_is_a_command_not_chat(harness: Harness, actions: RecordingActions) -> None:
    assert NOT_ADMIN.format(command="export") in shown(await harness.message("/export help", user=MEMBER))
    assert "Export finished for help." in shown(await harness.message("/export help", user=ADMIN))
    assert len(actions.calls) == 1


async def test_a_reply_failing_mid_stream_is_explained(
    adapter: HarnessFactory, engine: OpenVINOEngine, actions: RecordingActions
) -> None:
    async with adapter(build_core(FailingEngine(engine), actions)) as harness:
        answer = shown(await harness.message("Tell me about the sea."))
        assert FAILED in answer and "the device was lost" in answer


async def test_a_stop_lets_the_reply_being_written_finish(harness: Harness, engine: OpenVINOEngine) -> None:
    answer = shown(await harness.stop_while_answering("Tell me a story about a lighthouse."))
    reference = await _alone(engine, "Tell me a story about a lighthouse.")
    assert reference.split()[-1].strip("*_.!") in answer  # the reply's last word reached the platform


async def _alone(engine: OpenVINOEngine, text: str) -> str:
    """What the same question gets from a fresh conversation (greedy decoding: the same reply)."""
    core = build_core(engine, RecordingActions())
    return await core.manager.reply(ConversationKey("reference", "alone"), text).complete()


class HeldSurface(MemorySurface):
    """Another conversation's channel whose first post waits for ``release``: its reply keeps the slot till then."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def send(self, text: str, kind: Kind) -> object:
        await self.release.wait()
        return await super().send(text, kind)


async def test_a_reply_waiting_for_the_one_slot_ends_as_one_complete_reply(
    adapter: HarnessFactory, engine: OpenVINOEngine, actions: RecordingActions
) -> None:
    one_slot = Admission(AdmissionLimits(user_rate=None, max_generating=1))
    core = build_core(engine, actions, one_slot)
    async with adapter(core) as harness:
        if harness.platform == "console":
            pytest.skip("the console cannot take back a line it printed: the in-line text stays in its scrollback")
        elsewhere, asker = HeldSurface(), Identity("memory", "someone")
        other = core.submit(Incoming(ConversationKey("memory", "elsewhere"), asker, "Name a colour."), elsewhere)
        await wait_until(lambda: core.lineup.generating == 1)
        asking = asyncio.create_task(harness.message("What is the capital of France?"))
        await wait_until(lambda: core.lineup.waiting == 1)
        await asyncio.sleep(IN_LINE_AFTER_S + 0.5)  # long enough to show its place in line
        elsewhere.release.set()
        answer, _ = await asyncio.gather(asking, other)
    assert len(answer) == 1 and "Paris" in answer[0] and "In line" not in answer[0]
