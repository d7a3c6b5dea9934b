"""Fixtures for the Discord adapter: the local stand-in and the real bot connected to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.discord import DiscordAdapter, DiscordConfig
from bot.admin import AdminActions
from bot.core import Core
from bot.manager import ConversationConfig, ConversationManager
from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.store import MemoryHistoryStore
from bot.types import ConversationKey
from model.engine import ChatMessage
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.conftest import TEST_MAX_NEW_TOKENS, make_core
from tests.discord.gateway import GatewaySession
from tests.discord.payloads import TOKEN
from tests.discord.standin import DiscordStandIn, Posted

# Quick edits so even a short reply is edited while it streams; a short wait for guilds at start.
FAST: dict[str, Any] = {"edit_interval_s": 0.1, "edits_per_second": 20.0, "guild_ready_timeout_s": 0.1}


@pytest.fixture
async def standin() -> AsyncIterator[DiscordStandIn]:
    """A fresh Discord stand-in on a random local port."""
    server = DiscordStandIn()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def history() -> MemoryHistoryStore:
    """The conversation history behind ``chat_manager``, readable by tests."""
    return MemoryHistoryStore()


@pytest.fixture
def chat_manager(engine: OpenVINOEngine, history: MemoryHistoryStore) -> ConversationManager:
    """A manager on the real bundled model whose history the test can read."""
    config = ConversationConfig(system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=TEST_MAX_NEW_TOKENS)
    return ConversationManager(EngineSlot(engine), history, config)


@dataclass
class RunningBot:
    """The adapter's ``serve`` running against the stand-in."""

    task: asyncio.Task[None]
    stop: asyncio.Event
    session: GatewaySession
    core: Core

    async def stopped(self, seconds: float = 60.0) -> None:
        """Set the stop event and wait for ``serve`` to return."""
        self.stop.set()
        await asyncio.wait_for(self.task, seconds)


StartBot = Callable[..., Awaitable[RunningBot]]


@pytest.fixture
async def start_bot(standin: DiscordStandIn, chat_manager: ConversationManager) -> AsyncIterator[StartBot]:
    """``await start_bot(**config)`` runs the real discord.py bot over a fresh core until its gateway session is ready.

    ``admin_ids`` lists Discord admins (users or roles); other keywords are ``DiscordConfig`` fields.
    """
    running: list[RunningBot] = []

    async def start(
        *,
        actions: AdminActions | None = None,
        admin_ids: list[str] | None = None,
        stop_grace_s: float = 10.0,
        **fields: Any,
    ) -> RunningBot:
        config = DiscordConfig(**({"token": TOKEN, "api_base": standin.api_base} | FAST | fields))
        core = make_core(chat_manager, {"discord": admin_ids or []}, actions, stop_grace_s)
        stop = asyncio.Event()
        task = asyncio.create_task(DiscordAdapter(config).serve(core, stop))
        connected = asyncio.create_task(standin.connected())
        await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            connected.cancel()
            task.result()  # raises why the bot did not start
            raise AssertionError("serve returned before connecting")
        bot = RunningBot(task, stop, connected.result(), core)
        running.append(bot)
        return bot

    yield start
    for bot in running:
        await bot.stopped()  # also re-raises anything that ended serve early
    # Whatever the scenario, nothing the bot posted or edited may ping anyone.
    pinging = [body for body in standin.message_bodies() if body.get("allowed_mentions") != {"parse": []}]
    assert not pinging, f"messages sent without AllowedMentions.none(): {pinging}"


async def answer_in(
    standin: DiscordStandIn, manager: ConversationManager, store: MemoryHistoryStore, key: ConversationKey
) -> str:
    """The model's whole reply in ``key``, once it has been generated."""
    await standin.wait_for(lambda: manager.last_stats(key))
    turns: list[ChatMessage] = await store.history(key, 100)
    assert turns and turns[-1].role == "assistant", turns
    return turns[-1].content


async def answered(standin: DiscordStandIn, message_id: str, expected: list[str]) -> list[Posted]:
    """The bot's messages answering ``message_id`` once their texts are ``expected``."""
    await standin.wait_for(lambda: [message.content for message in standin.replies_to(message_id)] == expected)
    return standin.replies_to(message_id)
