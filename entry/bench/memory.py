"""P5: resident memory of the whole bot with many stored conversations and many waiting messages.

Run in a process of its own (``python -m entry.bench.memory``) so that nothing the other
benchmarks loaded is counted; it prints its measurements as JSON for `bot bench`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from bot.core import Core
from bot.settings import Settings, load_settings
from bot.store import SQLiteHistoryStore
from bot.types import ConversationKey, Identity, Incoming
from entry.bench.overhead import TimingSurface
from entry.bench.probes import PeakMemory, tree_rss_bytes
from entry.bench.workload import QUESTIONS
from entry.compose import open_core
from model.engine import ChatMessage

REPLY_TOKENS = 8


@dataclass(frozen=True)
class MemoryFigures:
    """What one P5 run saw."""

    stored: int
    waiting: int
    turns: int
    peak_bytes: int
    halfway_bytes: int
    end_bytes: int
    kv_cache_tokens: int


async def store_conversations(path: Path, count: int) -> None:
    """``count`` conversations of two turns each, written as the bot would have stored them."""
    store = await SQLiteHistoryStore.open(path)
    try:
        for index in range(count):
            key = ConversationKey("memory", f"stored-{index}")
            await store.append(key, ChatMessage("user", QUESTIONS[index % len(QUESTIONS)]))
            await store.append(key, ChatMessage("assistant", f"Here is what I know, part {index}."))
    finally:
        await store.close()


async def ask_together(core: Core, round_: int, waiting: int, stored: int) -> None:
    """One message in each of the round's ``waiting`` stored conversations, all sent at the same moment.

    Rounds move on through the stored conversations, so every turn brings a prompt the
    prefix cache has not seen: the cache fills to its bound and must then evict.
    """
    indexes = [(round_ * waiting + i) % stored for i in range(waiting)]
    question = QUESTIONS[round_ % len(QUESTIONS)]
    asks = [
        core.submit(
            Incoming(ConversationKey("memory", f"stored-{i}"), Identity("memory", f"user-{i}"), question),
            TimingSurface(),
        )
        for i in indexes
    ]
    await asyncio.gather(*asks)


async def measure(settings: Settings, stored: int, waiting: int, turns: int) -> MemoryFigures:
    """Store, then ask ``waiting`` messages at once, round after round, for ``turns`` turns in all.

    The memory halfway is compared with the memory at the end: by then the KV cache has long
    reached its bound, so anything still growing would be a leak.
    """
    await store_conversations(settings.history_db, stored)
    peak = PeakMemory()
    rounds, halfway = max(2, turns // waiting), 0
    async with open_core(settings, progress=False, follow_exports=False) as core:
        with peak.sampling():
            for round_ in range(rounds):
                if round_ == rounds // 2:
                    halfway = tree_rss_bytes()
                await ask_together(core, round_, waiting, stored)
            end = tree_rss_bytes()
    return MemoryFigures(stored, waiting, rounds * waiting, peak.peak_bytes, halfway, end, settings.kv_cache_tokens)


def bench_settings(model: Path, data_dir: Path, waiting: int) -> Settings:
    """The bot's settings from its environment, on ``model``, with room for ``waiting`` messages at once."""
    return load_settings(
        model_path=model, data_dir=data_dir, max_new_tokens=REPLY_TOKENS, max_waiting=waiting + 8, user_rate=None
    )


def main(
    model: Annotated[Path, typer.Argument()],
    data_dir: Annotated[Path, typer.Argument()],
    stored: Annotated[int, typer.Option()] = 1000,
    waiting: Annotated[int, typer.Option()] = 50,
    turns: Annotated[int, typer.Option()] = 1000,
) -> None:
    """Print P5's measurements as one JSON line."""
    settings = bench_settings(model, data_dir, waiting)
    figures = asyncio.run(measure(settings, stored, waiting, turns))
    typer.echo(json.dumps(asdict(figures)))


if __name__ == "__main__":
    typer.run(main)
