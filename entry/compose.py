"""The composition root: settings in, a running core out, everything closed again on every path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial

from bot.admin import EXPORT_ON_SERVERS, AdminActions, AdminPolicy, NoAdminActions
from bot.admission import Admission, AdmissionLimits
from bot.core import Core
from bot.export_service import ExportService
from bot.inbox import Inbox, SQLiteInbox, shared_turn
from bot.manager import ConversationConfig, ConversationManager
from bot.metrics import Metrics
from bot.settings import Settings
from bot.storage import open_history_store, open_inbox
from bot.store import HistoryStore, MemoryHistoryStore, Retention
from model.export import ExportTarget
from model.export_cleanup import clean_exports
from model.loader import load_engine, load_process_engine, load_remote_engine, resolve_model_path
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
        max_generating=generating_at_once(settings),
        max_waiting=settings.max_waiting,
        user_rate=settings.user_rate,
        max_message_chars=settings.max_message_chars,
        reply_deadline_s=settings.reply_deadline_s,
    )


def generating_at_once(settings: Settings) -> int:
    """How many replies the configured engine writes at once."""
    if settings.engine_url:  # each model server takes its own capacity
        return settings.engine_capacity * len(settings.engine_url)
    # LLMPipeline writes one reply at a time: any other would only look as if it were being written.
    return settings.max_generating if settings.engine == "batching" else 1


def admin_policy(settings: Settings) -> AdminPolicy:
    """Each platform's admins, as its settings list them."""
    listed = {"discord": settings.discord_admin_ids, "slack": settings.slack_admin_ids}
    return AdminPolicy(listed, trusted_platforms=TRUSTED_PLATFORMS)


def engine_loader(settings: Settings) -> EngineLoader:
    """How the configured kind of engine is loaded from a model path (at start and for every switch)."""
    properties, device, context = settings.runtime_properties(), settings.device, settings.context_size
    if settings.engine_url:
        # The model runs on the servers; the model at the path gives its tokenizer and chat template.
        key = settings.engine_api_key
        return partial(
            load_remote_engine,
            settings.engine_url,
            model=settings.engine_model,
            api_key=key.get_secret_value() if key else None,
            capacity=settings.engine_capacity,
            timeout_s=settings.engine_timeout_s,
            retry_s=settings.engine_retry_s,
            context_size=context,
        )
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
        store, inbox = await open_storage(settings, stack, persistent=persistent)
        metrics = Metrics()
        actions = await admin_actions(settings, slot, metrics, stack, follow_exports=follow_exports)
        ordered = shared_turn(inbox, settings.reply_deadline_s)
        manager = ConversationManager(slot, store, conversation_config(settings), shared_turn=ordered)
        core = Core(
            manager,
            admin_policy(settings),
            actions,
            metrics=metrics,
            admission=Admission(admission_limits(settings)),
            inbox=inbox,
            restart_window_s=settings.restart_answer_within_s,
        )
        stack.push_async_callback(core.aclose)  # runs first: nothing in flight outlives the store and engine
        yield core


async def open_storage(settings: Settings, stack: AsyncExitStack, *, persistent: bool) -> tuple[HistoryStore, Inbox]:
    """History store and inbox: PostgreSQL with BOT_DATABASE_URL, else SQLite (or memory); closed by ``stack``."""
    if not persistent:
        memory_inbox = SQLiteInbox.open(":memory:")
        stack.push_async_callback(memory_inbox.aclose)
        return MemoryHistoryStore(), memory_inbox
    url = settings.database_url.get_secret_value() if settings.database_url else None
    retention = Retention(settings.history_max_turns, settings.history_max_age_days)
    store = await open_history_store(url, settings.history_db, retention)
    stack.push_async_callback(store.close)
    inbox = await open_inbox(url, settings.history_db)
    stack.push_async_callback(inbox.aclose)
    return store, inbox


async def admin_actions(
    settings: Settings, slot: EngineSlot, metrics: Metrics, stack: AsyncExitStack, *, follow_exports: bool
) -> AdminActions:
    """Export from chat with a switch to the new model; with model servers only a note on how to change it."""
    if settings.engine_url:
        return NoAdminActions(EXPORT_ON_SERVERS)
    # Leftovers of a killed export go, and old exports beyond BOT_EXPORTS_KEPT; what is served stays.
    served = [slot.current.info.path, *([settings.model_path] if settings.model_path else [])]
    await asyncio.to_thread(clean_exports, settings.models_dir, settings.exports_kept, served)
    exports = export_service(slot, settings, metrics)
    if follow_exports and settings.model_path is None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(follow_current_export(exports.switcher, settings.models_dir, stop))
        stack.push_async_callback(asyncio.wait, {watcher})
        stack.callback(stop.set)
    return exports
