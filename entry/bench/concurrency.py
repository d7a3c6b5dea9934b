"""P1 and P2: many conversations at once, and a long conversation's follow-up after others ran in between."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.manager import ConversationConfig, ConversationManager
from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.store import MemoryHistoryStore
from bot.types import ConversationKey
from entry.bench.report import Figure, at_least
from entry.bench.workload import FOLLOW_UP, QUESTIONS, Timed, long_history, timed_reply
from model.engine import ChatMessage, Engine
from model.slot import EngineSlot

P1_THROUGHPUT_TARGET = 4.0
P1_LAST_TTFT_TARGET = 8.0
P2_TARGET = 30.0
OTHER_CONVERSATIONS = 8


@dataclass
class Measured:
    """The bot's engine's own P1 and P2 timings, kept so that another engine can be compared with them."""

    p1: list[Timed] = field(default_factory=list)
    p2: Timed | None = None
    history: list[ChatMessage] = field(default_factory=list)


def manager_on(engine: Engine, max_new_tokens: int) -> tuple[ConversationManager, MemoryHistoryStore]:
    """A conversation manager as the bot builds it, over ``engine``, with its history in memory."""
    store = MemoryHistoryStore()
    config = ConversationConfig(system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=max_new_tokens)
    return ConversationManager(EngineSlot(engine), store, config), store


async def warm_up(engine: Engine) -> None:
    """One short reply, so that first-inference setup is not counted against either side."""
    manager, _ = manager_on(engine, 4)
    await timed_reply(manager, ConversationKey("bench", "warm-up"), "Hello!")


async def all_at_once(engine: Engine, max_new_tokens: int, channel: str = "p1") -> list[Timed]:
    """Every question asked at the same moment in its own conversation, each streamed to its asker."""
    manager, _ = manager_on(engine, max_new_tokens)
    asks = [timed_reply(manager, ConversationKey("bench", f"{channel}-{i}"), q) for i, q in enumerate(QUESTIONS)]
    return list(await asyncio.gather(*asks))


def tokens_per_s(replies: Sequence[Timed]) -> float:
    """Tokens of all replies over the time from the first ask to the last reply's end."""
    seconds = max(r.ended for r in replies) - min(r.started for r in replies)
    return sum(r.tokens for r in replies) / seconds


async def p1_many_at_once(
    bot: Engine, serial: Engine, max_new_tokens: int, seen: Measured | None = None
) -> list[Figure]:
    """Eight conversations asked at once: the bot's engine against a serial ``LLMPipeline``."""
    ours = await all_at_once(bot, max_new_tokens)
    if seen is not None:
        seen.p1 = ours
    base = await all_at_once(serial, max_new_tokens)
    ours_rate, base_rate = tokens_per_s(ours), tokens_per_s(base)
    ours_last, base_last = max(r.ttft_s for r in ours), max(r.ttft_s for r in base)
    return [
        Figure(
            "P1",
            f"{len(QUESTIONS)} conversations at once: aggregate tokens/s",
            f"{ours_rate:.0f} tok/s",
            f"{base_rate:.0f} tok/s (serial LLMPipeline)",
            *at_least(ours_rate / base_rate, P1_THROUGHPUT_TARGET),
            note=f"{sum(r.tokens for r in ours)} and {sum(r.tokens for r in base)} tokens, "
            f"at most {max_new_tokens} per reply, greedy.",
        ),
        Figure(
            "P1",
            "the last asker's time to first token",
            f"{ours_last:.2f} s",
            f"{base_last:.2f} s",
            *at_least(base_last / ours_last, P1_LAST_TTFT_TARGET),
        ),
    ]


async def follow_up_ttft(engine: Engine, history: Sequence[ChatMessage], max_new_tokens: int) -> tuple[Timed, Timed]:
    """The first ask in a long conversation and its follow-up after eight others ran in between."""
    manager, store = manager_on(engine, max_new_tokens)
    key = ConversationKey("bench", "long")
    for message in history:
        await store.append(key, message)
    first = await timed_reply(manager, key, QUESTIONS[0])
    others = [timed_reply(manager, ConversationKey("bench", f"p2-{i}"), QUESTIONS[i]) for i in range(8)]
    await asyncio.gather(*others)
    return first, await timed_reply(manager, key, FOLLOW_UP)


async def p2_follow_up(
    bot: Engine, serial: Engine, history_tokens: int, max_new_tokens: int, seen: Measured | None = None
) -> list[Figure]:
    """A follow-up with a long history after interleaving: the bot's engine against a re-prefill."""
    history = await long_history(bot.count_tokens, history_tokens)
    counted = sum([await bot.count_tokens(m.content) for m in history])
    ours_first, ours = await follow_up_ttft(bot, history, max_new_tokens)
    if seen is not None:
        seen.p2, seen.history = ours, history
    _, base = await follow_up_ttft(serial, history, max_new_tokens)
    return [
        Figure(
            "P2",
            f"follow-up after {OTHER_CONVERSATIONS} other conversations, {counted:,} tokens of history: "
            "time to first token",
            f"{ours.ttft_s:.2f} s",
            f"{base.ttft_s:.2f} s (LLMPipeline, history prefilled again)",
            *at_least(base.ttft_s / ours.ttft_s, P2_TARGET),
            note=f"the first ask in that conversation took {ours_first.ttft_s:.2f} s to its first token on the "
            "bot's engine (cold prefill).",
        )
    ]
