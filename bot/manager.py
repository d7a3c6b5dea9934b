"""The conversation manager: history, trimming, rendering and streaming, per conversation.

Adapters call ``reply(key, text)`` and iterate the returned ``Reply`` for text
chunks.  Messages of one conversation are answered one at a time in arrival order;
different conversations only share the engine, never a lock.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass

from bot.ordering import ArrivalOrder, Place
from bot.prompt import PHI3_CONTROL_TOKENS, guard_for, render_phi3
from bot.store import HistoryStore
from bot.trimming import FittedPrompt, fit_prompt
from bot.types import ChatMessage, ConversationKey, ReplyStats
from model.engine import Engine, GenerationParams
from model.slot import EngineSlot

log = logging.getLogger(__name__)

# Stats of the last reply are kept for this many recently active conversations.
STATS_KEPT = 10_000
CUT_NOTICE = "Your message was too long for the model's context; only its beginning was read."


@dataclass(frozen=True)
class ConversationConfig:
    """How replies are generated."""

    system_prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    history_limit: int = 200


class Reply:
    """One answer being generated: iterate it for text chunks.

    After iteration ``text`` holds the whole reply, ``stats`` its measurements and
    ``notices`` anything the user should be told (for example that their message was cut).
    Its place in the conversation's line is taken on creation; a reply that is never
    iterated gives it up on ``aclose()`` or when it is garbage-collected.
    """

    def __init__(self, manager: ConversationManager, key: ConversationKey, text: str, place: Place) -> None:
        self._manager = manager
        self.key = key
        self.prompt_text = text
        self.place = place
        self.text = ""
        self.stats: ReplyStats | None = None
        self.notices: list[str] = []
        self._started = False
        self._entered = False  # set once iteration really began (not merely __aiter__)
        weakref.finalize(self, place.leave)

    def __aiter__(self) -> AsyncIterator[str]:
        if self._started:
            raise RuntimeError("a Reply can be iterated only once")
        self._started = True
        return self._manager._run(self)

    async def complete(self) -> str:
        """Consume the whole reply and return its text."""
        async for _ in self:
            pass
        return self.text

    async def aclose(self) -> None:
        """Give up a reply that will not be read (further), so later messages are not held up."""
        if not self._entered:
            self.place.leave()


class ConversationManager:
    """Keeps every conversation's history and turns new messages into streamed replies."""

    def __init__(self, engines: EngineSlot, store: HistoryStore, config: ConversationConfig) -> None:
        self._engines = engines
        self._store = store
        self._config = config
        self._order = ArrivalOrder()
        self._last_stats: OrderedDict[ConversationKey, ReplyStats] = OrderedDict()

    @property
    def model_name(self) -> str:
        """Name of the model that answers new messages."""
        return self._engines.current.info.name

    def reply(self, key: ConversationKey, text: str) -> Reply:
        """Queue ``text`` in conversation ``key`` (arrival order); iterate the result for chunks."""
        return Reply(self, key, text, self._order.take_place(key))

    async def reset(self, key: ConversationKey) -> int:
        """Forget a conversation's history (after the messages before it); return the turns removed."""
        place = self._order.take_place(key)
        try:
            await place.wait()
            self._last_stats.pop(key, None)
            return await self._store.reset(key)
        finally:
            place.leave()

    def last_stats(self, key: ConversationKey) -> ReplyStats | None:
        """Measurements of the last reply in ``key``, if any."""
        return self._last_stats.get(key)

    async def _run(self, reply: Reply) -> AsyncIterator[str]:
        reply._entered = True
        try:
            await reply.place.wait()
            async with self._engines.lease() as engine, aclosing(self._generate(engine, reply)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            reply.place.leave()

    async def _generate(self, engine: Engine, reply: Reply) -> AsyncGenerator[str]:
        await self._store.append(reply.key, ChatMessage("user", reply.prompt_text))
        fitted = await self._fit(engine, await self._store.history(reply.key, self._config.history_limit))
        if fitted.cut_message:
            reply.notices.append(CUT_NOTICE)
        stream = engine.stream(fitted.prompt, self._params())
        try:
            async for chunk in stream:
                reply.text += chunk
                yield chunk
        finally:
            await stream.aclose()
            if reply.text:
                await self._store.append(reply.key, ChatMessage("assistant", reply.text))
            reply.stats = stream.stats
            if stream.stats is not None:
                self._remember_stats(reply.key, stream.stats)

    def _remember_stats(self, key: ConversationKey, stats: ReplyStats) -> None:
        self._last_stats[key] = stats
        self._last_stats.move_to_end(key)
        if len(self._last_stats) > STATS_KEPT:
            self._last_stats.popitem(last=False)

    async def _fit(self, engine: Engine, history: Sequence[ChatMessage]) -> FittedPrompt:
        info = engine.info
        guard = guard_for(engine.control_tokens | (PHI3_CONTROL_TOKENS if info.family == "phi3" else frozenset()))
        render = render_phi3 if info.family == "phi3" else engine.apply_chat_template
        system = ChatMessage("system", self._config.system_prompt) if self._config.system_prompt else None
        budget = info.context_size - self._config.max_new_tokens
        turns = guard.defuse_messages(merge_consecutive_turns(history))
        fitted = await fit_prompt(system, turns, render, engine.count_tokens, budget)
        if fitted.dropped_turns:
            log.debug("Dropped %d old turns to fit the context", fitted.dropped_turns)
        return fitted

    def _params(self) -> GenerationParams:
        config = self._config
        return GenerationParams(config.max_new_tokens, config.temperature, config.top_p, config.repetition_penalty)


def merge_consecutive_turns(history: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Join turns of the same role that follow each other.

    A reply that failed or was stopped before any text leaves two user turns in a
    row; many chat templates (Llama 2, Mistral, Gemma) reject that.
    """
    merged: list[ChatMessage] = []
    for message in history:
        if merged and merged[-1].role == message.role:
            merged[-1] = ChatMessage(message.role, f"{merged[-1].content}\n\n{message.content}")
        else:
            merged.append(message)
    return merged
