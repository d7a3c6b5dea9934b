"""Serving a new model without dropping a reply: load it, swap it into the slot, follow `bot export`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

from model.engine import Engine, ModelLoadError
from model.loader import load_engine
from model.manifest import current_export
from model.slot import EngineSlot

log = logging.getLogger(__name__)

EngineLoader = Callable[[Path], Engine]


class ModelSwitcher:
    """Loads a model and swaps it into the slot, one switch at a time."""

    def __init__(
        self,
        slot: EngineSlot,
        device: str,
        properties: Mapping[str, str],
        context_size: int | None = None,
        *,
        load: EngineLoader | None = None,
    ) -> None:
        self.slot = slot
        # The same kind of engine as the one it replaces (a batching one, say), loaded the same way.
        self._load = load or partial(load_engine, device=device, properties=dict(properties), context_size=context_size)
        self._lock = asyncio.Lock()

    async def switch_to(self, path: Path) -> bool:
        """Serve new replies from the model at ``path``; ``False`` if it already answers."""
        async with self._lock:
            if _same_file(self.slot.current.info.path, path):
                return False
            engine = await asyncio.to_thread(self._load, path)
            old = await self.slot.swap(engine)
            log.info("Now answering with %s; replies in flight finish on %s", engine.info.name, old.info.name)
            return True


def _same_file(first: Path, second: Path) -> bool:
    # Symlinks and relative data dirs would make equal models look different.
    return first.resolve() == second.resolve()


async def follow_current_export(
    switcher: ModelSwitcher, models_dir: Path, stop: asyncio.Event, interval: float = 2.0
) -> None:
    """Swap to the current export whenever "current" changes (for example after `bot export`) until ``stop``."""
    seen = await asyncio.to_thread(current_export, models_dir)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        latest = await asyncio.to_thread(current_export, models_dir)
        if stop.is_set() or latest is None or latest == seen:
            continue
        seen = latest
        try:
            await switcher.switch_to(latest)
        except ModelLoadError as error:
            log.error("The current export %s does not load; still answering with the old model: %s", latest, error)
        except Exception:  # the watcher must outlive one bad export, whatever went wrong
            log.exception("Switching to %s failed; still answering with the old model", latest)
