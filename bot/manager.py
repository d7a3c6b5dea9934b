"""The conversation manager: history, trimming, rendering and streaming, per conversation.

Adapters call ``reply(key, text)`` and iterate the returned ``Reply`` for text
chunks.  Messages of one conversation are answered one at a time in arrival order;
different conversations only share the engine, never a lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from bot.prompt import PHI3_CONTROL_TOKENS, ControlTokenGuard, render_phi3
from bot.store import HistoryStore
from bot.trimming import FittedPrompt, fit_prompt
from bot.types import ChatMessage, ConversationKey, ReplyStats
from model.engine import Engine, GenerationParams
from model.slot import EngineSlot

log = logging.getLogger(__name__)

CUT_NOTICE = "Your message was too long for the model's context; only its beginning was read."


@dataclass(frozen=True)
class ConversationConfig:
    """How replies are generated."""

    system_prompt: str
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    history_limit: int = 200


class Reply:
    """One answer being generated: iterate it for text chunks.

    After iteration ``text`` holds the whole reply, ``stats`` its measurements and
    ``notices`` anything the user should be told (for example that their message was cut).
    """

    def __init__(self, manager: ConversationManager, key: ConversationKey, text: str) -> None:
        self._manager = manager
        self.key = key
        self.prompt_text = text
        self.text = ""
        self.stats: ReplyStats | None = None
        self.notices: list[str] = []
        self._started = False

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


class ConversationManager:
    """Keeps every conversation's history and turns new messages into streamed replies."""

    def __init__(self, engines: EngineSlot, store: HistoryStore, config: ConversationConfig) -> None:
        self._engines = engines
        self._store = store
        self._config = config
        self._locks: dict[ConversationKey, asyncio.Lock] = {}
        self._last_stats: dict[ConversationKey, ReplyStats] = {}

    @property
    def model_name(self) -> str:
        """Name of the model that answers new messages."""
        return self._engines.current.info.name

    def reply(self, key: ConversationKey, text: str) -> Reply:
        """Start answering ``text`` in conversation ``key``; iterate the result for chunks."""
        return Reply(self, key, text)

    async def reset(self, key: ConversationKey) -> int:
        """Forget a conversation's history; return how many turns were removed."""
        async with self._lock(key):
            self._last_stats.pop(key, None)
            return await self._store.reset(key)

    def last_stats(self, key: ConversationKey) -> ReplyStats | None:
        """Measurements of the last reply in ``key``, if any."""
        return self._last_stats.get(key)

    async def _run(self, reply: Reply) -> AsyncIterator[str]:
        async with self._lock(reply.key), self._engines.lease() as engine:
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
                self._last_stats[reply.key] = stream.stats

    async def _fit(self, engine: Engine, history: Sequence[ChatMessage]) -> FittedPrompt:
        info = engine.info
        guard = ControlTokenGuard(engine.control_tokens | (PHI3_CONTROL_TOKENS if info.family == "phi3" else set()))
        render = render_phi3 if info.family == "phi3" else engine.apply_chat_template
        system = ChatMessage("system", self._config.system_prompt) if self._config.system_prompt else None
        budget = info.context_size - self._config.max_new_tokens
        fitted = await fit_prompt(system, guard.defuse_messages(history), render, engine.count_tokens, budget)
        if fitted.dropped_turns:
            log.debug("Dropped %d old turns to fit the context", fitted.dropped_turns)
        return fitted

    def _params(self) -> GenerationParams:
        return GenerationParams(self._config.max_new_tokens, self._config.temperature, self._config.top_p)

    def _lock(self, key: ConversationKey) -> asyncio.Lock:
        # Locks are tiny and FIFO-fair, which is what keeps arrival order per conversation.
        return self._locks.setdefault(key, asyncio.Lock())
