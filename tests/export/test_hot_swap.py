"""Hot swap under load: replies in flight finish on the old model, new ones use the new model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bot.manager import ConversationManager
from bot.reply import Reply
from bot.types import ConversationKey
from model.export import ExportResult
from model.loader import load_process_engine
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.export.conftest import MAX_NEW_TOKENS, RUNTIME, SharedEngine, manager_on, requires_export_extra

pytestmark = requires_export_extra

CONVERSATIONS = 20


@dataclass
class Turn:
    """One reply and where it stood relative to the swap."""

    conversation: int
    started_after_swap: bool
    finished_after_swap: bool
    reply: Reply


class Load:
    """Shared state of the conversations: their turns, and events for the test to wait on."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.swapped = asyncio.Event()
        self.warmed_up = asyncio.Event()

    def record(self, turn: Turn) -> None:
        self.turns.append(turn)
        if len(self.turns) >= CONVERSATIONS // 2:
            self.warmed_up.set()


async def converse(manager: ConversationManager, index: int, load: Load) -> None:
    """Keep one conversation busy until it has had one reply that started after the swap."""
    key = ConversationKey("load", f"channel-{index}")
    for number in range(100):
        started_after = load.swapped.is_set()
        reply = manager.reply(key, f"Conversation {index}, message {number}: tell me about the sea.")
        async for _ in reply:
            pass
        load.record(Turn(index, started_after, load.swapped.is_set(), reply))
        if started_after:
            return


async def test_swap_while_twenty_conversations_stream(engine: OpenVINOEngine, exported_engine: OpenVINOEngine) -> None:
    old, new = SharedEngine(engine), SharedEngine(exported_engine)
    slot = EngineSlot(old)
    manager = manager_on(slot)
    load = Load()
    tasks = [asyncio.create_task(converse(manager, i, load)) for i in range(CONVERSATIONS)]
    await asyncio.wait_for(load.warmed_up.wait(), timeout=120)

    assert await slot.swap(new) is old
    load.swapped.set()
    assert not old.released, "replies in flight still use the old model"
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=240)

    assert old.released, "the old model is released once drained"
    assert not new.released
    turns = load.turns
    for turn in turns:
        stats = turn.reply.stats
        assert stats is not None, f"reply in conversation {turn.conversation} did not finish"
        assert 1 <= stats.generated_tokens <= MAX_NEW_TOKENS
        assert turn.reply.notices == []
        expected = new.info.name if turn.started_after_swap else old.info.name
        assert stats.model_name == expected
    in_flight = [t for t in turns if not t.started_after_swap and t.finished_after_swap]
    after = [t for t in turns if t.started_after_swap]
    assert len(in_flight) == CONVERSATIONS, "every conversation had a reply in flight during the swap"
    assert sorted(t.conversation for t in after) == list(range(CONVERSATIONS))
    assert manager.model_name == new.info.name
    assert len(new.prompts) == CONVERSATIONS


BATCH = 8


async def test_swap_while_eight_replies_stream_on_batching_engines(bundled_model: Path, exported: ExportResult) -> None:
    """Both engines as the bot runs them: continuous batching, each in its own process."""
    old = await asyncio.to_thread(load_process_engine, bundled_model, "CPU", RUNTIME)
    new = await asyncio.to_thread(load_process_engine, exported.path, "CPU", RUNTIME)
    slot = EngineSlot(old)
    manager = manager_on(slot, max_new_tokens=32)
    try:
        replies = [
            manager.reply(ConversationKey("swap", f"c{i}"), f"Tell me about ship number {i}.") for i in range(BATCH)
        ]
        iterators = [reply.__aiter__() for reply in replies]
        firsts = await asyncio.gather(*(anext(it) for it in iterators))  # all eight are streaming now
        assert all(isinstance(chunk, str) for chunk in firsts)

        await slot.swap(new)
        after = manager.reply(ConversationKey("swap", "after"), "Hello after the swap.")
        rests = await asyncio.gather(*(_drain(it) for it in iterators), after.complete())

        for reply, first, rest in zip(replies, firsts, rests, strict=False):
            assert reply.stats is not None and reply.stats.model_name == old.info.name
            assert reply.text == first + rest and reply.text.strip()
        assert after.stats is not None and after.stats.model_name == new.info.name
        # The slot closed the old engine after its last reply; closing reaps its process.
        assert not _running(old.pid)
    finally:
        await slot.aclose()


async def _drain(chunks: AsyncIterator[str]) -> str:
    return "".join([chunk async for chunk in chunks])


def _running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
