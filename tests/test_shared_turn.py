"""Order across bot processes: a reply waits for its shared turn before it reads the history."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.inbox import InboxError, shared_turn
from bot.manager import ConversationConfig, ConversationManager
from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.store import MemoryHistoryStore
from bot.types import ConversationKey
from model.engine import ChatMessage
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.conftest import RecordingEngine

KEY = ConversationKey("slack", "C1")


class StuckInbox:
    """An inbox whose wait never ends (another process stuck on an earlier message)."""

    async def turn(self, key: ConversationKey, row: int | None) -> None:
        await asyncio.Event().wait()


class BrokenInbox:
    """An inbox whose database is gone."""

    async def turn(self, key: ConversationKey, row: int | None) -> None:
        raise InboxError("Cannot use the PostgreSQL database at db:5432/bot: connection refused")


async def test_a_wait_past_its_limit_is_logged_and_the_reply_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    turn = shared_turn(StuckInbox(), limit_s=0.05)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(turn(KEY, 7), timeout=5)
    assert "answering now" in caplog.text


async def test_a_failing_database_is_logged_and_the_reply_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    turn = shared_turn(BrokenInbox(), limit_s=5)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        await turn(KEY, 7)
    assert "connection refused" in caplog.text


@pytest.mark.model
async def test_the_answer_another_process_stores_meanwhile_is_in_the_prompt(engine: OpenVINOEngine) -> None:
    store = MemoryHistoryStore()
    seen: list[tuple[ConversationKey, int | None]] = []

    async def other_process_answers_first(key: ConversationKey, row: int | None) -> None:
        # While this reply waits for its turn, another process answers the conversation's earlier message.
        seen.append((key, row))
        await store.append(key, ChatMessage("user", "My name is Ada."))
        await store.append(key, ChatMessage("assistant", "Nice to meet you, Ada."))

    recording = RecordingEngine(engine)
    config = ConversationConfig(system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=4)
    manager = ConversationManager(
        EngineSlot(recording),  # type: ignore[arg-type]
        store,
        config,
        shared_turn=other_process_answers_first,
    )
    async with manager.reply(KEY, "What is my name?", row=42) as reply:
        await reply.complete()
    assert seen == [(KEY, 42)]
    prompt = recording.prompts[-1]
    assert prompt.index("My name is Ada.") < prompt.index("Nice to meet you, Ada.") < prompt.index("What is my name?")
    history = await store.history(KEY, 10)
    assert [turn.content for turn in history[:3]] == ["My name is Ada.", "Nice to meet you, Ada.", "What is my name?"]


@pytest.mark.model
async def test_a_reset_waits_for_its_shared_turn_too(engine: OpenVINOEngine) -> None:
    store = MemoryHistoryStore()

    async def other_process_answers_first(key: ConversationKey, row: int | None) -> None:
        await store.append(key, ChatMessage("user", "an earlier message another process answered"))

    config = ConversationConfig(system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=4)
    manager = ConversationManager(EngineSlot(engine), store, config, shared_turn=other_process_answers_first)
    assert await manager.reset(KEY, row=3) == 1  # the turn stored while it waited is reset too
    assert await store.history(KEY, 10) == []
