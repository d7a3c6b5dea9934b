"""The composition root: settings in, a running core out, everything closed again on every path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

from bot.admin import AdminPolicy
from bot.admission import Admission, AdmissionLimits
from bot.core import Core
from bot.export_service import ExportService
from bot.inbox import Inbox
from bot.manager import ConversationConfig, ConversationManager
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import HistoryStore, MemoryHistoryStore, Retention, SQLiteHistoryStore
from model.export import ExportTarget
from model.export_cleanup import clean_exports
from model.loader import load_engine, load_process_engine, resolve_model_path
from model.slot import EngineSlot
from model.switcher import EngineLoader, ModelSwitcher, follow_current_export

# Whoever sits at the console owns the machine, so the console user is an admin.
TRUSTED_PLATFORMS = ("console",)


def conversation_config(settings: Settings) -> ConversationConfig:
    """The generation settings the manager applies to every reply."""
    return ConversationConfig(
        system_prompt=settings.system_prompt,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        repetition_penalty=settings.repetition_penalty,
        attachment_limit_bytes=settings.attachment_max_bytes,
    )


def admission_limits(settings: Settings) -> AdmissionLimits:
    """What the bot takes on at once, from one user, in one message and in one reply's time."""
    return AdmissionLimits(
        # LLMPipeline writes one reply at a time: any other would only look as if it were being written.
        max_generating=settings.max_generating if settings.engine == "batching" else 1,
        max_waiting=settings.max_waiting,
        user_rate=settings.user_rate,
        max_message_chars=settings.max_message_chars,
        reply_deadline_s=settings.reply_deadline_s,
    )


def admin_policy(settings: Settings) -> AdminPolicy:
    """Each platform's admins, as its settings list them."""
    listed = {"discord": settings.discord_admin_ids, "slack": settings.slack_admin_ids}
    return AdminPolicy(listed, trusted_platforms=TRUSTED_PLATFORMS)


def engine_loader(settings: Settings) -> EngineLoader:
    """How the configured kind of engine is loaded from a model path (at start and for every switch)."""
    properties, device, context = settings.runtime_properties(), settings.device, settings.context_size
    if settings.engine == "batching":
        # In a process of its own: a batching step holds the GIL, which would stall the bot's event loop.
        return partial(
            load_process_engine,
            device=device,
            properties=properties,
            context_size=context,
            cache_tokens=settings.kv_cache_tokens,
        )
    return partial(load_engine, device=device, properties=properties, context_size=context)


async def load_engine_slot(settings: Settings, *, progress: bool = True) -> EngineSlot:
    """Find (fetching the bundled model if needed) and compile the configured model."""
    path = await asyncio.to_thread(resolve_model_path, settings.model_path, settings.models_dir, progress=progress)
    return EngineSlot(await asyncio.to_thread(engine_loader(settings), path))


def export_service(slot: EngineSlot, settings: Settings, metrics: Metrics | None = None) -> ExportService:
    """Admin re-export into the settings' models directory, swapping into ``slot``."""
    properties = settings.runtime_properties()
    switcher = ModelSwitcher(slot, settings.device, properties, settings.context_size, load=engine_loader(settings))
    target = ExportTarget(
        settings.models_dir,
        settings.device,
        properties,
        time_limit_s=settings.export_time_limit_s,
        hf_token=settings.hf_token,
    )
    return ExportService(
        switcher, target, allowed_sources=settings.export_sources, pinned_model=settings.model_path, metrics=metrics
    )


@asynccontextmanager
async def open_core(
    settings: Settings, *, persistent: bool = True, progress: bool = True, follow_exports: bool = True
) -> AsyncIterator[Core]:
    """Load the model and history store and build the core; close everything on exit, also after a failure.

    With ``follow_exports`` (and no BOT_MODEL_PATH pinning a model) the bot also switches,
    without dropping a reply, to any export that `bot export` makes current meanwhile.
    """
    async with AsyncExitStack() as stack:
        slot = await load_engine_slot(settings, progress=progress)
        stack.push_async_callback(slot.aclose)
        retention = Retention(settings.history_max_turns, settings.history_max_age_days)
        store: HistoryStore = (
            await SQLiteHistoryStore.open(settings.history_db, retention=retention)
            if persistent
            else MemoryHistoryStore()
        )
        stack.push_async_callback(store.close)
        # Leftovers of a killed export go, and old exports beyond BOT_EXPORTS_KEPT; what is served stays.
        served = [slot.current.info.path, *([settings.model_path] if settings.model_path else [])]
        await asyncio.to_thread(clean_exports, settings.models_dir, settings.exports_kept, served)
        metrics = Metrics()
        exports = export_service(slot, settings, metrics)
        if follow_exports and settings.model_path is None:
            stop = asyncio.Event()
            watcher = asyncio.create_task(follow_current_export(exports.switcher, settings.models_dir, stop))
            stack.push_async_callback(asyncio.wait, {watcher})
            stack.callback(stop.set)
        inbox = Inbox.open(settings.history_db if persistent else ":memory:")
        stack.callback(inbox.close)
        manager = ConversationManager(slot, store, conversation_config(settings))
        core = Core(
            manager,
            admin_policy(settings),
            exports,
            metrics=metrics,
            admission=Admission(admission_limits(settings)),
            inbox=inbox,
            restart_window_s=settings.restart_answer_within_s,
        )
        stack.push_async_callback(core.aclose)  # runs first: nothing in flight outlives the store and engine
        yield core
