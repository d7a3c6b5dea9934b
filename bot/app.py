"""The composition root: settings in, a ready conversation manager and admin actions out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from model.export_service import ExportService, follow_current_export

from bot.admin import AdminActions
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
        repetition_penalty=settings.repetition_penalty,
    )


async def load_engine_slot(settings: Settings, *, progress: bool = True) -> EngineSlot:
    """Find (fetching the bundled model if needed) and compile the configured model."""
    path = await asyncio.to_thread(resolve_model_path, settings.model_path, settings.models_dir, progress=progress)
    engine = await asyncio.to_thread(
        load_engine, path, settings.device, settings.runtime_properties(), settings.context_size
    )
    return EngineSlot(engine)


@dataclass(frozen=True)
class BotServices:
    """A running bot's parts that share one engine slot."""

    manager: ConversationManager
    admin: AdminActions


@asynccontextmanager
async def open_services(
    settings: Settings, *, persistent: bool = True, progress: bool = True, follow_exports: bool = True
) -> AsyncIterator[BotServices]:
    """Load the model and history store, with admin re-export; close everything on exit.

    With ``follow_exports`` (and no BOT_MODEL_PATH pinning a model) the bot also switches,
    without dropping a reply, to any export that `bot export` makes current meanwhile.
    """
    slot = await load_engine_slot(settings, progress=progress)
    store: HistoryStore = await SQLiteHistoryStore.open(settings.history_db) if persistent else MemoryHistoryStore()
    admin = ExportService.from_settings(slot, settings)
    stop = asyncio.Event()
    follow = follow_exports and settings.model_path is None
    watcher = asyncio.create_task(follow_current_export(admin.switcher, settings.models_dir, stop)) if follow else None
    try:
        yield BotServices(ConversationManager(slot, store, conversation_config(settings)), admin)
    finally:
        stop.set()
        if watcher is not None:
            await watcher
        await store.close()
        await slot.aclose()
