"""What the benchmarks ask: eight different questions, a long conversation, and how a reply is timed."""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.manager import ConversationManager
from bot.types import ConversationKey
from model.engine import ChatMessage

QUESTIONS = (
    "Explain how a lighthouse works, step by step.",
    "Write a short story about a cat who learns to sail.",
    "What should a team check before releasing new software?",
    "Describe the water cycle to a ten year old.",
    "Give me five ideas for a rainy weekend.",
    "How do I make a good cup of tea?",
    "Why is the sky blue? Answer in detail.",
    "Write a poem about the sea at night.",
)
FOLLOW_UP = "Thanks. Now sum up everything we discussed in three sentences."
_TOPICS = ("the harbour", "the old mill", "the river", "the market", "the school", "the bridge", "the forest")
_SENTENCES = (
    "People gathered near {topic} early in the morning to talk about the weather and the week ahead.",
    "Someone suggested that the path along {topic} should be repaired before the winter storms arrive.",
    "The children drew maps of {topic} and marked every tree, bench and lamp post they could find.",
    "An engineer measured how much water passed under {topic} each hour during the spring floods.",
)


@dataclass
class Timed:
    """When a reply started, showed its first text and ended, and how many tokens it had."""

    started: float
    first: float = 0.0
    ended: float = 0.0
    tokens: int = 0

    @property
    def ttft_s(self) -> float:
        """Seconds from asking to the first text."""
        return self.first - self.started


async def timed_reply(manager: ConversationManager, key: ConversationKey, text: str) -> Timed:
    """Ask ``text`` in ``key`` and time the streamed answer as its asker sees it."""
    timed = Timed(time.perf_counter())
    async with manager.reply(key, text) as reply:
        async for _ in reply:
            timed.first = timed.first or time.perf_counter()
    timed.ended = time.perf_counter()
    timed.tokens = reply.stats.generated_tokens if reply.stats else 0
    return timed


async def long_history(count_tokens: Callable[[str], Awaitable[int]], min_tokens: int) -> list[ChatMessage]:
    """User and assistant turns of varied prose that together take at least ``min_tokens`` tokens."""
    turns: list[ChatMessage] = []
    tokens = 0
    lines = (_sentence(i) for i in itertools.count())
    while tokens < min_tokens:
        question = f"Tell me more about the town, part {len(turns) // 2 + 1}."
        answer = " ".join(next(lines) for _ in range(6))
        turns += [ChatMessage("user", question), ChatMessage("assistant", answer)]
        tokens += await count_tokens(question) + await count_tokens(answer)
    return turns


def _sentence(index: int) -> str:
    """The ``index``-th sentence of the long conversation: every sentence shape about every topic in turn."""
    shape = _SENTENCES[index % len(_SENTENCES)]
    return shape.format(topic=_TOPICS[index // len(_SENTENCES) % len(_TOPICS)])
