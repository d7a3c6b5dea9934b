"""Admin re-export with hot swap, the same for every chat surface.

``/export [SOURCE] [--option VALUE ...]`` (syntax in ``EXPORT_USAGE``) exports a
checkpoint, validates it, makes it the current model and swaps the running
engine: replies in flight finish on the old model, new ones use the new model,
and the old model is released once drained.  From chat only allowlisted hub ids
are exported, with no path-valued option (``chat_export_request``); the export
stops at the target's time limit, and ``/export cancel`` stops it at once.  One
export runs at a time; every request, refusal, cancel and time-out is written to
the ``bot.audit`` log with who asked, when, the parameters and the result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bot.metrics import Metrics
from model.engine import ModelLoadError
from model.export import ExportResult, ExportTarget, ExportTimeoutError, ProgressEvent, export_model
from model.export_checks import ExportError
from model.export_options import (
    DEFAULT_SOURCE,
    EXPORT_USAGE,
    ExportRequest,
    ExportRequestError,
    chat_export_request,
)
from model.manifest import current_export, restore_current_export, utc_now
from model.switcher import ModelSwitcher

log = logging.getLogger(__name__)
audit = logging.getLogger("bot.audit")

ProgressCallback = Callable[[str], Awaitable[None]]

PROGRESS_INTERVAL_S = 10.0
_HELP_WORDS = frozenset({"help", "-h", "--help"})


class ExportService:
    """Re-export from chat: parse the argument, export one at a time, audit, hot-swap."""

    def __init__(
        self,
        switcher: ModelSwitcher,
        target: ExportTarget,
        *,
        allowed_sources: Sequence[str] = (DEFAULT_SOURCE,),
        pinned_model: Path | None = None,
        progress_interval: float = PROGRESS_INTERVAL_S,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._switcher = switcher
        self._target = target
        self._allowed_sources = tuple(allowed_sources)
        self._pinned_model = pinned_model
        self._progress_interval = progress_interval
        self._lock = asyncio.Lock()
        self._running: tuple[str, str] | None = None
        self._job: asyncio.Task[tuple[ExportResult, Path | None]] | None = None
        self._cancelled_by: str | None = None

    @property
    def switcher(self) -> ModelSwitcher:
        """The switcher this service swaps with; share it with ``follow_current_export``."""
        return self._switcher

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        """Export as ``argument`` says (``help`` for the syntax, ``cancel`` to stop one) and switch to it.

        Returns the outcome for the admin: a refusal, a failure, a time-out, a cancel, or the new model.
        """
        word = argument.strip().lower()
        if word in _HELP_WORDS:
            return EXPORT_USAGE
        if word == "cancel":
            return await self.cancel(requested_by)
        try:
            request = chat_export_request(argument, self._allowed_sources)
        except ExportRequestError as error:
            audit.warning("export by %s refused at %s: %s (argument %r)", requested_by, utc_now(), error, argument)
            self._metrics.export_run("refused")
            return f"{error}\n{EXPORT_USAGE}"
        if self._running is not None:
            who, since = self._running
            audit.warning(
                "export by %s refused at %s: one is already running (source=%s)",
                requested_by,
                utc_now(),
                request.source,
            )
            return f"An export is already running (requested by {who} at {since}). Try again when it has finished."
        async with self._lock:
            self._running = (requested_by, utc_now())
            try:
                return await self._export(requested_by, request, progress)
            finally:
                self._running = None

    async def cancel(self, requested_by: str) -> str:
        """Stop the running export (converter killed, its directory removed); say what happened."""
        job, running = self._job, self._running
        if running is None:
            audit.info("export cancel by %s at %s: no export was running", requested_by, utc_now())
            return "No export is running."
        if job is None or job.done():  # converted and validated: only the switch is left
            audit.info("export cancel by %s at %s: too late, the export is switching models", requested_by, utc_now())
            return "The export has finished converting and is switching to the new model; it cannot be cancelled."
        self._cancelled_by = requested_by
        job.cancel()
        await asyncio.wait({job})  # the converter is dead and its directory gone once the job is done
        who, since = running
        return f"Cancelled the export requested by {who} at {since}; its files were removed."

    async def _export(self, who: str, request: ExportRequest, progress: ProgressCallback) -> str:
        parameters = json.dumps(request.options.model_dump(mode="json"), sort_keys=True)
        audit.info("export requested by %s at %s: source=%s parameters=%s", who, utc_now(), request.source, parameters)
        chat = _ChatProgress(progress, self._progress_interval)
        serving = self._switcher.slot.current.info.name
        try:
            # A task of its own, so that `/export cancel` can stop it without stopping this request.
            self._job = asyncio.create_task(self._convert(who, request, chat))
            result, previous = await self._job
            await self._activate(result, previous, chat)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._cancelled_by is None or (task is not None and task.cancelling()):
                audit.warning("export by %s cancelled at %s (the bot is stopping)", who, utc_now())
                raise
            audit.warning("export by %s cancelled by %s at %s; files removed", who, self._cancelled_by, utc_now())
            self._metrics.export_run("cancelled")
            return f"Export cancelled by {self._cancelled_by}. The current model ({serving}) keeps answering."
        except ExportTimeoutError as error:
            audit.warning("export by %s timed out at %s: %s", who, utc_now(), error)
            self._metrics.export_run("timed_out")
            return f"Export timed out: {error}\nThe current model ({serving}) keeps answering."
        except (ExportError, ModelLoadError) as error:
            audit.warning("export by %s failed at %s: %s", who, utc_now(), error)
            self._metrics.export_run("failed")
            return f"Export failed: {error}\nThe current model ({serving}) keeps answering."
        except Exception as error:  # a bug must not take the adapter down; it is logged in full
            log.exception("export by %s crashed", who)
            audit.error("export by %s failed at %s: unexpected %s: %s", who, utc_now(), type(error).__name__, error)
            self._metrics.export_run("failed")
            return f"Export failed unexpectedly ({type(error).__name__}: {error}).\nThe current model keeps answering."
        finally:
            self._job, self._cancelled_by = None, None
        return self._succeeded(who, result, serving)

    async def _convert(self, who: str, request: ExportRequest, chat: _ChatProgress) -> tuple[ExportResult, Path | None]:
        previous = await asyncio.to_thread(current_export, self._target.models_dir)
        return await export_model(request, self._target, chat.on_event, requested_by=who), previous

    def _succeeded(self, who: str, result: ExportResult, serving: str) -> str:
        now_serving = self._switcher.slot.current.info.name
        self._metrics.export_run("succeeded")
        self._metrics.model(now_serving)
        audit.info(
            "export by %s succeeded at %s: %s in %.0f s; now answering with %s",
            who,
            utc_now(),
            result.path,
            result.seconds,
            now_serving,
        )
        return self._success_message(result, serving, now_serving)

    async def _activate(self, result: ExportResult, previous: Path | None, chat: _ChatProgress) -> None:
        await chat.say(f"Loading {result.path.name} to answer new messages…")
        try:
            await self._switcher.switch_to(result.path)
        except BaseException:
            # Validated but not servable here: "current" must name what actually answers, unless
            # another export (a `bot export` run) has replaced it meanwhile; this one goes.
            await asyncio.to_thread(_withdraw_export, self._target.models_dir, result.path, previous)
            raise

    def _success_message(self, result: ExportResult, old: str, new: str) -> str:
        validation = result.manifest.get("validation", {})
        lines = [
            f"Export finished in {result.seconds:.0f} s: {result.path.name} "
            f"(validated: {validation.get('generated_tokens', 0)} tokens through the {validation.get('template')} "
            "prompt format).",
            f"Now answering with {new}; replies already being written finish on {old}.",
        ]
        if self._pinned_model is not None:
            lines.append(
                f"Note: BOT_MODEL_PATH is set, so after a restart the bot loads {self._pinned_model} again; "
                "unset it to keep using the current export."
            )
        return "\n".join(lines)


def _withdraw_export(models_dir: Path, directory: Path, previous: Path | None) -> None:
    if current_export(models_dir) == directory.resolve():
        restore_current_export(models_dir, previous)
    shutil.rmtree(directory, ignore_errors=True)


class _ChatProgress:
    """Forwards stage changes and, at most every ``interval`` seconds, a line of optimum-cli output."""

    def __init__(self, send: ProgressCallback, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._interval = interval
        self._clock = clock
        self._last = clock()

    async def on_event(self, event: ProgressEvent) -> None:
        if event.line is None:
            await self.say(f"[{event.step}/{event.total}] {event.stage}…")
        elif self._clock() - self._last >= self._interval:
            await self.say(f"[{event.step}/{event.total}] {event.line.strip()[:200]}")

    async def say(self, text: str) -> None:
        self._last = self._clock()
        try:
            await self._send(text)
        except Exception:  # a chat hiccup must not abort an export that is going well
            log.warning("Could not send export progress", exc_info=True)
