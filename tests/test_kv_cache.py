"""The batching engine's KV cache holds the tokens BOT_KV_CACHE_TOKENS says, and the core trims prompts to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.manager import ConversationConfig, ConversationManager
from bot.store import MemoryHistoryStore
from bot.types import ConversationKey
from model.batching_engine import BatchingEngine
from model.engine import ChatMessage, EngineError, GenerationParams
from model.loader import load_batching_engine
from model.scheduler import kv_blocks
from model.slot import EngineSlot

pytestmark = pytest.mark.model

CACHE_TOKENS = 256


def test_the_cache_is_counted_in_whole_blocks_of_the_device() -> None:
    assert kv_blocks("CPU", 8192) == 256
    assert kv_blocks("CPU", 8193) == 257
    assert kv_blocks("GPU.1", 8192) == 512


@pytest.fixture(scope="module")
async def small_cache(bundled_model: Path) -> AsyncIterator[BatchingEngine]:
    engine = load_batching_engine(bundled_model, "CPU", {}, cache_tokens=CACHE_TOKENS)
    yield engine
    await engine.aclose()


async def test_a_prompt_beyond_the_cache_fails_with_the_setting_to_raise(small_cache: BatchingEngine) -> None:
    assert small_cache.info.context_size == CACHE_TOKENS  # the model's own 8192 would never fit
    prompt = small_cache.apply_chat_template([ChatMessage("user", "tell me more " * 150)])
    assert await small_cache.count_tokens(prompt) > CACHE_TOKENS
    with pytest.raises(EngineError, match="BOT_KV_CACHE_TOKENS"):
        async for _ in small_cache.stream(prompt, GenerationParams(max_new_tokens=4)):
            pass


async def test_a_long_conversation_is_trimmed_to_the_cache_and_answered(small_cache: BatchingEngine) -> None:
    store = MemoryHistoryStore()
    key = ConversationKey("memory", "long")
    for turn in range(20):
        await store.append(key, ChatMessage("user", f"Question {turn} about the river and the old mill?"))
        await store.append(key, ChatMessage("assistant", f"Answer {turn}: the mill stands by the river."))
    config = ConversationConfig(system_prompt="You are helpful.", max_new_tokens=16)
    manager = ConversationManager(EngineSlot(small_cache), store, config)
    async with manager.reply(key, "What is the capital of France?") as reply:
        text = await reply.complete()
    assert text.strip()
    assert reply.stats is not None and reply.stats.prompt_tokens <= CACHE_TOKENS - config.max_new_tokens
