"""Two Slack Socket Mode processes of one app share the threads they follow through the history database.

Each adapter has its own core and manager, as two `bot run` processes would, over one SQLite history file;
the stand-in spreads events over both connections, and each test chooses which connection gets which.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.slack.state import REFRESH_S, SharedThreads
from adapters.slack.translate import channel_key
from bot.manager import ConversationConfig, ConversationManager
from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.store import SQLiteHistoryStore
from bot.threads import MemoryThreadMap
from bot.types import ConversationKey
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.conftest import RecordingEngine
from tests.slack.conftest import CHANNEL, USER, running_slack, slack_config, slack_core
from tests.slack.standin import BOT_USER_ID, SlackStandIn, message_event

MAX_NEW_TOKENS = 8


@dataclass
class Process:
    """One bot process: its engine (remembering prompts), its history store and its Socket Mode connection."""

    engine: RecordingEngine
    store: SQLiteHistoryStore
    connection: int = -1


@pytest.fixture
async def processes(engine: OpenVINOEngine, standin: SlackStandIn, tmp_path: Path) -> AsyncIterator[list[Process]]:
    """Two adapters on one history file, connected to the stand-in in turn (so each knows its connection)."""
    async with AsyncExitStack() as stack:
        started: list[Process] = []
        for number in (1, 2):
            store = await SQLiteHistoryStore.open(tmp_path / "history.sqlite3")
            stack.push_async_callback(store.close)
            process = Process(RecordingEngine(engine), store)
            config = ConversationConfig(DEFAULT_SYSTEM_PROMPT, MAX_NEW_TOKENS)
            manager = ConversationManager(EngineSlot(process.engine), store, config)  # type: ignore[arg-type]
            await stack.enter_async_context(running_slack(slack_core(manager), slack_config(standin)))
            opened = await standin.wait_connections(number)
            process.connection = max(opened)
            started.append(process)
        yield started


async def turns_stored(store: SQLiteHistoryStore, key: ConversationKey, count: int) -> None:
    """Wait until the conversation keeps ``count`` turns (its answers are complete)."""
    async with asyncio.timeout(60):
        # Written by the core's own tasks into the database: there is no event to wait on.
        while await store.count(key) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.model
async def test_a_reply_in_a_thread_another_process_answered_continues_its_conversation(
    standin: SlackStandIn, processes: list[Process]
) -> None:
    first, second = processes
    ts = standin.next_ts()
    mention = message_event(
        f"<@{BOT_USER_ID}> What is the capital of France?", channel=CHANNEL, user=USER, ts=ts, kind="app_mention"
    )
    await standin.send_event(mention, connection=first.connection)
    await turns_stored(first.store, ConversationKey("slack", CHANNEL, ts), 2)

    # Not addressed otherwise: only the thread being followed makes the second process answer it.
    reply = message_event("And of Italy?", channel=CHANNEL, user=USER, ts=standin.next_ts(), thread_ts=ts)
    await standin.send_event(reply, connection=second.connection)
    await standin.wait_replies(CHANNEL, ts, count=2)

    assert len(first.engine.prompts) == 1
    [prompt] = second.engine.prompts
    assert "capital of France" in prompt and "And of Italy?" in prompt  # the earlier turn, answered by the first
    await turns_stored(second.store, ConversationKey("slack", CHANNEL, ts), 4)


@pytest.mark.model
async def test_an_ask_thread_goes_on_with_the_channel_conversation_in_another_process(
    standin: SlackStandIn, processes: list[Process]
) -> None:
    envelope = await standin.send_command("/ask", "What is the capital of France?", user=USER, channel=CHANNEL)
    asker = next(p for p in processes if p.connection == standin.delivered[envelope])
    other = next(p for p in processes if p is not asker)
    asked = await standin.wait_for(
        lambda: next((m for m in standin.timeline if m.channel == CHANNEL and m.thread_ts is None), None)
    )
    await turns_stored(asker.store, channel_key(CHANNEL), 2)

    reply = message_event("And of Italy?", channel=CHANNEL, user=USER, ts=standin.next_ts(), thread_ts=asked.ts)
    await standin.send_event(reply, connection=other.connection)
    await standin.wait_replies(CHANNEL, asked.ts, count=2)

    [prompt] = other.engine.prompts
    assert "capital of France" in prompt and "And of Italy?" in prompt
    # In the channel's conversation, not a new one of the thread.
    await turns_stored(other.store, channel_key(CHANNEL), 4)
    assert await other.store.count(ConversationKey("slack", CHANNEL, asked.ts)) == 0


class CountedMap(MemoryThreadMap):
    """The memory map, counting the queries and writes that reach it; each query waits for ``answer``."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = self.writes = 0
        self.answer = asyncio.Event()

    async def followed(self, platform: str, channel: str, thread: str) -> ConversationKey | None:
        self.queries += 1
        await self.answer.wait()
        return await super().followed(platform, channel, thread)

    async def follow(self, platform: str, channel: str, thread: str, key: ConversationKey) -> None:
        self.writes += 1
        await super().follow(platform, channel, thread, key)


async def test_messages_of_one_thread_share_one_query_and_keep_their_order() -> None:
    shared, woken = CountedMap(), []
    await MemoryThreadMap.follow(shared, "slack", CHANNEL, "5.0", channel_key(CHANNEL))  # by another process
    threads = SharedThreads(shared)

    async def message(name: str) -> None:
        assert await threads.lookup(CHANNEL, "5.0") == channel_key(CHANNEL)
        woken.append(name)

    waiting = [asyncio.create_task(message(name)) for name in ("first", "second", "third")]
    await asyncio.sleep(0)  # all three are asking now
    shared.answer.set()
    await asyncio.gather(*waiting)

    assert woken == ["first", "second", "third"]
    assert shared.queries == 1
    assert threads.follows(CHANNEL, "5.0")
    assert await threads.lookup(CHANNEL, "6.0") is None and shared.queries == 2  # an unfollowed thread asks again


async def test_the_shared_map_is_written_when_a_thread_is_new_moved_or_due_a_refresh() -> None:
    shared, now = CountedMap(), [0.0]
    threads = SharedThreads(shared, clock=lambda: now[0])
    key = ConversationKey("slack", CHANNEL, "5.0")
    for _ in range(3):
        await threads.follow(CHANNEL, "5.0", key)
    assert shared.writes == 1
    await threads.follow(CHANNEL, "5.0", channel_key(CHANNEL))  # moved to another conversation
    assert shared.writes == 2
    now[0] += REFRESH_S
    await threads.follow(CHANNEL, "5.0", channel_key(CHANNEL))
    assert shared.writes == 3
    assert await MemoryThreadMap.followed(shared, "slack", CHANNEL, "5.0") == channel_key(CHANNEL)
