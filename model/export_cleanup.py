"""At start: remove unfinished exports and prune old ones.

An export directory gets its manifest last, so one without a manifest was left by an export that failed
hard or was killed (the bot killed with ``kill -9``, say).  Complete exports beyond the newest ``keep`` are
pruned; the current export and any path in ``protect`` (the model being served, ``BOT_MODEL_PATH``) always
stay.  Nothing is touched while another export holds the models directory's lock: its directory is not
finished yet.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

from model.export import ExportBusyError, export_lock
from model.export_checks import ExportError
from model.manifest import current_export, exports_dir, read_manifest

log = logging.getLogger(__name__)


def clean_exports(models_dir: Path, keep: int, protect: Collection[Path] = ()) -> list[Path]:
    """Remove unfinished exports and all but the newest ``keep`` complete ones; return what was removed."""
    if not exports_dir(models_dir).is_dir():
        return []
    try:
        with export_lock(models_dir):
            return _clean(models_dir, keep, protect)
    except ExportBusyError:
        log.info("An export is running in %s; old and unfinished exports are left for the next start", models_dir)
    except ExportError as error:
        log.warning("Could not clean up old exports: %s", error)
    return []


def _clean(models_dir: Path, keep: int, protect: Collection[Path]) -> list[Path]:
    directories = [p for p in exports_dir(models_dir).iterdir() if p.is_dir() and not p.is_symlink()]
    finished = {path: read_manifest(path) for path in directories}
    unfinished = [path for path, manifest in finished.items() if manifest is None]
    complete = sorted(
        (path for path, manifest in finished.items() if manifest is not None),
        key=lambda path: _finished_at(path, finished[path] or {}),
        reverse=True,
    )
    current = current_export(models_dir)
    kept = {path.resolve() for path in protect}
    kept.update(path.resolve() for path in complete[:keep])
    if current is not None:
        kept.add(current)
    old = [path for path in complete if path.resolve() not in kept]
    removed = []
    for path, why in [*((p, "unfinished") for p in unfinished), *((p, "older than the newest kept") for p in old)]:
        if path.resolve() in kept:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            log.info("Removed export %s (%s)", path, why)
            removed.append(path)
        else:
            log.warning("Could not remove export %s (%s)", path, why)
    return removed


def _finished_at(path: Path, manifest: dict[str, object]) -> str:
    """When the export finished (ISO UTC, so strings sort by time); its directory's time if unrecorded."""
    finished = manifest.get("finished")
    if isinstance(finished, str):
        return finished
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
