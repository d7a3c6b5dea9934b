"""Admin re-export with hot swap, the same for every chat surface.

``/export [SOURCE] [--option VALUE ...]`` (syntax in ``EXPORT_USAGE``) exports a
checkpoint, validates it, makes it the current model and swaps the running
engine: replies in flight finish on the old model, new ones use the new model,
and the old model is released once drained.  One export runs at a time; every
request is written to the ``bot.audit`` log with who asked, when, the parameters
and the result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from model.engine import ModelLoadError
from model.export import ExportResult, ExportTarget, ProgressEvent, export_model
from model.export_checks import ExportError
from model.export_options import EXPORT_USAGE, ExportRequest, ExportRequestError, parse_export_argument
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
        pinned_model: Path | None = None,
        progress_interval: float = PROGRESS_INTERVAL_S,
    ) -> None:
        self._switcher = switcher
        self._target = target
        self._pinned_model = pinned_model
        self._progress_interval = progress_interval
        self._lock = asyncio.Lock()
        self._running: tuple[str, str] | None = None

    @property
    def switcher(self) -> ModelSwitcher:
        """The switcher this service swaps with; share it with ``follow_current_export``."""
        return self._switcher

    async def export(self, requested_by: str, argument: str, progress: ProgressCallback) -> str:
        """Export as ``argument`` says (``help`` for the syntax) and switch to it; return the outcome."""
        if argument.strip().lower() in _HELP_WORDS:
            return EXPORT_USAGE
        try:
            request = parse_export_argument(argument)
        except ExportRequestError as error:
            audit.warning("export by %s refused at %s: %s (argument %r)", requested_by, utc_now(), error, argument)
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

    async def _export(self, who: str, request: ExportRequest, progress: ProgressCallback) -> str:
        parameters = json.dumps(request.options.model_dump(mode="json"), sort_keys=True)
        audit.info("export requested by %s at %s: source=%s parameters=%s", who, utc_now(), request.source, parameters)
        chat = _ChatProgress(progress, self._progress_interval)
        serving = self._switcher.slot.current.info.name
        try:
            previous = await asyncio.to_thread(current_export, self._target.models_dir)
            result = await export_model(request, self._target, chat.on_event, requested_by=who)
            await self._activate(result, previous, chat)
        except asyncio.CancelledError:
            audit.warning("export by %s cancelled at %s (the bot is stopping)", who, utc_now())
            raise
        except (ExportError, ModelLoadError) as error:
            audit.warning("export by %s failed at %s: %s", who, utc_now(), error)
            return f"Export failed: {error}\nThe current model ({serving}) keeps answering."
        except Exception as error:  # a bug must not take the adapter down; it is logged in full
            log.exception("export by %s crashed", who)
            audit.error("export by %s failed at %s: unexpected %s: %s", who, utc_now(), type(error).__name__, error)
            return f"Export failed unexpectedly ({type(error).__name__}: {error}).\nThe current model keeps answering."
        now_serving = self._switcher.slot.current.info.name
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
