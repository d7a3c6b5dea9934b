"""Discord shards split across processes: each process runs its shards of DISCORD_SHARD_COUNT against one gateway.

Two adapters in one test stand for two ``bot run`` processes: each has its own core, and
the stand-in sends each shard only its servers' events, as Discord does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

import pytest

from adapters.discord import DiscordAdapter, DiscordConfig
from adapters.discord.translate import PLATFORM
from bot.core import Core
from bot.health import Health
from bot.manager import ConversationConfig, ConversationManager
from bot.settings import DEFAULT_SYSTEM_PROMPT, SettingsError, load_settings
from bot.store import MemoryHistoryStore
from bot.types import ConversationKey
from entry.platforms import load_adapters
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.conftest import make_core
from tests.discord import payloads
from tests.discord.conftest import FAST, answer_in, answered
from tests.discord.payloads import CHANNEL_ID, GUILD_ID, TOKEN, mention
from tests.discord.standin import DiscordStandIn

# Discord puts a server on shard (guild_id >> 22) % count: GUILD_ID is on shard 1 of 2, this one on shard 0.
OTHER_GUILD_ID = GUILD_ID + (1 << 22)
OTHER_CHANNEL_ID = 1300000000000000101
LOGGER = "adapters.discord.client"


def _other_guild() -> payloads.Payload:
    """GUILD_CREATE for a second server with one channel, #other."""
    guild = payloads.guild_create()
    channel = guild["channels"][0] | {"id": str(OTHER_CHANNEL_ID), "guild_id": str(OTHER_GUILD_ID), "name": "other"}
    everyone = guild["roles"][0] | {"id": str(OTHER_GUILD_ID)}  # @everyone's id is the server's
    return guild | {
        "id": str(OTHER_GUILD_ID),
        "name": "Other",
        "channels": [channel],
        "threads": [],
        "roles": [everyone],
    }


def _ask(channel_id: int, guild_id: int) -> payloads.Payload:
    message = payloads.message_create(f"{mention()} Say hi.", channel_id=channel_id, mentions=(payloads.bot_user(),))
    return message | {"guild_id": str(guild_id)}


def _discord_up(core: Core) -> bool:
    return core.health.report()["platforms"] == {PLATFORM: True}


@asynccontextmanager
async def _serving(standin: DiscordStandIn, core: Core, **fields: Any) -> AsyncIterator[None]:
    """``DiscordAdapter.serve`` on ``core`` with ``fields`` of ``DiscordConfig``, stopped (and checked) at the end."""
    config = DiscordConfig(**({"token": TOKEN, "api_base": standin.api_base} | FAST | fields))
    stop = asyncio.Event()
    task = asyncio.create_task(DiscordAdapter(config).serve(core, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60.0)  # also re-raises anything that ended serve early


@dataclass
class Process:
    """What one bot process holds here: its own history, model manager and core."""

    history: MemoryHistoryStore
    manager: ConversationManager
    core: Core


def _process(engine: OpenVINOEngine) -> Process:
    history = MemoryHistoryStore()
    config = ConversationConfig(system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=8)  # short replies
    manager = ConversationManager(EngineSlot(engine), history, config)
    return Process(history, manager, make_core(manager))


@pytest.mark.model
async def test_two_processes_each_answer_the_servers_of_their_shard_once(
    standin: DiscordStandIn, engine: OpenVINOEngine
) -> None:
    standin.more_guilds.append(_other_guild())
    first, second = _process(engine), _process(engine)  # shard 0 (OTHER_GUILD_ID), shard 1 (GUILD_ID)
    async with (
        _serving(standin, first.core, shard_count=2, shard_ids=(0,)),
        _serving(standin, second.core, shard_count=2, shard_ids=(1,)),
    ):
        sessions = [await standin.connected(shard=(shard, 2)) for shard in (0, 1)]
        assert [(session.identify or {}).get("shard") for session in sessions] == [[0, 2], [1, 2]]
        await standin.wait_for(lambda: _discord_up(first.core) and _discord_up(second.core))

        for process, guild_id, channel_id in (
            (first, OTHER_GUILD_ID, OTHER_CHANNEL_ID),
            (second, GUILD_ID, CHANNEL_ID),
        ):
            question = _ask(channel_id, guild_id)
            await standin.dispatch("MESSAGE_CREATE", question)
            key = ConversationKey(PLATFORM, str(channel_id))
            answer = await answer_in(standin, process.manager, process.history, key)
            (reply,) = await answered(standin, question["id"], [answer])
            assert reply.channel_id == str(channel_id)

    # Each message reached only its shard's process: the other one never stored or answered it.
    assert await first.history.history(ConversationKey(PLATFORM, str(CHANNEL_ID)), 10) == []
    assert await second.history.history(ConversationKey(PLATFORM, str(OTHER_CHANNEL_ID)), 10) == []
    assert len([message for message in standin.posted if message.replying_to is not None]) == 2


@pytest.mark.model
async def test_ready_only_while_every_shard_of_the_process_is_up(
    standin: DiscordStandIn, chat_manager: ConversationManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    core = make_core(chat_manager)
    standin.held_shards[1] = held = asyncio.Event()  # shard 1's READY waits
    async with _serving(standin, core, shard_count=2):  # no ids: every shard in this process
        try:
            await standin.wait_for(lambda: "Discord shard 0 of 2 ready (1 of this process's 2 up)" in caplog.text)
            assert not _discord_up(core)
        finally:
            held.set()
        await standin.wait_for(lambda: _discord_up(core))
        assert "Discord shard 1 of 2 ready (2 of this process's 2 up)" in caplog.text
    assert "Running Discord shards 0, 1 of 2 in this process" in caplog.text


async def test_a_dropped_shard_makes_the_process_unready_until_it_is_back() -> None:
    # A drop on the stand-in would cost 5 s: discord.py waits that long before each IDENTIFY after the first.
    adapter, health = DiscordAdapter(DiscordConfig(token=TOKEN, shard_count=4, shard_ids=(1, 3))), Health()
    adapter._core = cast(Core, SimpleNamespace(health=health))  # only its health is used here
    readings = []
    for event in (
        adapter.on_shard_ready(1),
        adapter.on_shard_ready(3),
        adapter.on_shard_disconnect(1),
        adapter.on_shard_resumed(1),
    ):
        await event
        readings.append(health.report()["platforms"])
    up, down = {PLATFORM: True}, {PLATFORM: False}
    assert readings == [down, up, down, up]


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"DISCORD_SHARD_IDS": "0"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "1,2"}, r"between 0 and 1 \(DISCORD_SHARD_COUNT - 1\)"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "one"}, "DISCORD_SHARD_IDS"),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "1,1"}, "names a shard twice"),
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT must be at least 1"),
    ],
)
def test_shard_settings_that_cannot_work_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message) as refused:
        load_adapters(load_settings())  # either may refuse: the settings themselves, or the Discord config
    assert TOKEN not in str(refused.value)


@pytest.mark.parametrize(
    ("environment", "count", "shards"),
    [
        ({}, None, ()),
        ({"DISCORD_SHARD_COUNT": "3"}, 3, (0, 1, 2)),
        ({"DISCORD_SHARD_COUNT": "4", "DISCORD_SHARD_IDS": "3, 1"}, 4, (3, 1)),
    ],
)
def test_shard_settings_reach_the_discord_config(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], count: int | None, shards: tuple[int, ...]
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    (adapter,) = load_adapters(load_settings())
    assert isinstance(adapter, DiscordAdapter)
    assert (adapter.config.shard_count, adapter.config.shards) == (count, shards)
