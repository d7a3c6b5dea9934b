"""Export manifests and the "current model" pointer under the models directory.

Layout::

    <models dir>/exports/<name>/...            one directory per export, never changed after it is complete
    <models dir>/exports/<name>/export-manifest.json   written last: an export without one is incomplete
    <models dir>/current.json                  {"path": "exports/<name>", ...}, replaced atomically

This module only needs the standard library: the bot reads the pointer at start-up
without the export extra installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPORTS_DIR = "exports"
MANIFEST_NAME = "export-manifest.json"
CURRENT_NAME = "current.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


def exports_dir(models_dir: Path) -> Path:
    """Where versioned exports are kept."""
    return models_dir / EXPORTS_DIR


def utc_now() -> str:
    """The current time as an ISO-8601 UTC timestamp (seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(directory: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``directory`` except the manifest, by relative path."""
    checksums: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        if relative == MANIFEST_NAME:
            continue
        checksums[relative] = {"sha256": sha256_of(path), "bytes": path.stat().st_size}
    return checksums


def checksum_mismatches(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Files that are missing, extra or changed compared with the manifest's checksums."""
    recorded: dict[str, Any] = manifest.get("files", {})
    actual = file_checksums(directory)
    problems = [f"missing {name}" for name in recorded if name not in actual]
    problems += [f"unexpected {name}" for name in actual if name not in recorded]
    problems += [
        f"changed {name}"
        for name, entry in actual.items()
        if name in recorded and recorded[name].get("sha256") != entry["sha256"]
    ]
    return problems


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` so that a reader sees either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2, sort_keys=False)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest that marks ``directory`` as a complete export."""
    path = directory / MANIFEST_NAME
    write_json_atomically(path, manifest)
    return path


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of an export directory, or ``None`` when it has none (incomplete export)."""
    data = _read_json(directory / MANIFEST_NAME)
    return data if data and data.get("format") == MANIFEST_FORMAT else None


def current_export(models_dir: Path) -> Path | None:
    """The export "current" points to, if it is set and complete; ``None`` otherwise."""
    pointer = _read_json(models_dir / CURRENT_NAME)
    if pointer is None:
        return None
    relative = pointer.get("path")
    target = (models_dir / relative).resolve() if isinstance(relative, str) else None
    if target is None or not target.is_relative_to(models_dir.resolve()) or read_manifest(target) is None:
        log.warning("%s does not point to a complete export; ignoring it", models_dir / CURRENT_NAME)
        return None
    return target


def set_current_export(models_dir: Path, directory: Path) -> None:
    """Point "current" at ``directory`` (an export under ``models_dir``) atomically."""
    relative = directory.resolve().relative_to(models_dir.resolve()).as_posix()
    write_json_atomically(models_dir / CURRENT_NAME, {"path": relative, "since": utc_now()})


def restore_current_export(models_dir: Path, previous: Path | None) -> None:
    """Put "current" back to ``previous`` (no pointer at all when it is ``None``)."""
    if previous is None:
        (models_dir / CURRENT_NAME).unlink(missing_ok=True)
    else:
        set_current_export(models_dir, previous)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("Cannot read %s (%s)", path, error)
        return None
    return data if isinstance(data, dict) else None
