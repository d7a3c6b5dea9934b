"""The composition root: settings in, a ready conversation manager out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.manager import ConversationConfig, ConversationManager
from bot.settings import Settings
from bot.store import HistoryStore, MemoryHistoryStore, SQLiteHistoryStore
from model.loader import load_engine, resolve_model_path
from model.slot import EngineSlot


def conversation_config(settings: Settings) -> ConversationConfig:
    """The generation settings the manager applies to every reply."""
    return ConversationConfig(
        system_prompt=settings.system_prompt,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
    )


async def load_engine_slot(settings: Settings, *, progress: bool = True) -> EngineSlot:
    """Find (fetching the bundled model if needed) and compile the configured model."""
    path = await asyncio.to_thread(resolve_model_path, settings.model_path, settings.models_dir, progress=progress)
    engine = await asyncio.to_thread(
        load_engine, path, settings.device, settings.runtime_properties(), settings.context_size
    )
    return EngineSlot(engine)


@asynccontextmanager
async def open_bot(
    settings: Settings, *, persistent: bool = True, progress: bool = True
) -> AsyncIterator[ConversationManager]:
    """Load the model and history store; close both on exit."""
    slot = await load_engine_slot(settings, progress=progress)
    store: HistoryStore = await SQLiteHistoryStore.open(settings.history_db) if persistent else MemoryHistoryStore()
    try:
        yield ConversationManager(slot, store, conversation_config(settings))
    finally:
        await store.close()
        await slot.aclose()
