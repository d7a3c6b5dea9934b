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
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

EXPORTS_DIR = "exports"
MANIFEST_NAME = "export-manifest.json"
CURRENT_NAME = "current.json"
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20
_HASH_THREADS = min(4, os.cpu_count() or 1)
# Files whose change could change the model: weights, graphs, configs, tokenizers, templates, code.
MODEL_FILE_SUFFIXES = frozenset(
    {".xml", ".bin", ".json", ".safetensors", ".onnx", ".gguf", ".model", ".jinja", ".txt", ".tiktoken", ".py"}
)


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


def export_files(directory: Path) -> dict[str, Path]:
    """Every file under ``directory`` except the manifest, by relative POSIX path, sorted."""
    files = {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file()}
    files.pop(MANIFEST_NAME, None)
    return dict(sorted(files.items()))


def sha256_many(paths: Iterable[Path]) -> list[str]:
    """sha256 of each file, several at once (hashlib releases the GIL, so threads use several cores)."""
    with ThreadPoolExecutor(max_workers=_HASH_THREADS) as pool:
        return list(pool.map(sha256_of, paths))


def file_checksums(directory: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``directory`` except the manifest, by relative path."""
    files = export_files(directory)
    digests = sha256_many(files.values())
    return {
        name: {"sha256": digest, "bytes": path.stat().st_size}
        for (name, path), digest in zip(files.items(), digests, strict=True)
    }


def is_model_file(relative: str) -> bool:
    """Whether a file of an export could change what the model does (hidden files and notes cannot)."""
    path = PurePosixPath(relative)
    return not any(part.startswith(".") for part in path.parts) and path.suffix.lower() in MODEL_FILE_SUFFIXES


def checksum_mismatches(directory: Path, manifest: dict[str, Any]) -> list[str]:
    """Files that are missing, extra (model files only) or changed compared with the manifest's checksums."""
    recorded: dict[str, Any] = manifest.get("files", {})
    present = export_files(directory)
    problems = [f"missing {name}" for name in recorded if name not in present]
    problems += [f"unexpected {name}" for name in present if name not in recorded and is_model_file(name)]
    listed = [name for name in recorded if name in present]
    # A different size needs no hashing; the rest are hashed together.
    resized = {name for name in listed if recorded[name].get("bytes") not in (None, present[name].stat().st_size)}
    to_hash = [name for name in listed if name not in resized]
    digests = dict(zip(to_hash, sha256_many(present[name] for name in to_hash), strict=True))
    changed = resized | {name for name, digest in digests.items() if recorded[name].get("sha256") != digest}
    return problems + [f"changed {name}" for name in listed if name in changed]


def manifest_problem(directory: Path) -> str | None:
    """Why ``directory`` does not match its manifest's checksums, or ``None`` (also when it has no manifest)."""
    manifest = read_manifest(directory)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        return None
    started = time.monotonic()
    problems = checksum_mismatches(directory, manifest)
    log.info("Checked %s against %s in %.1f s", directory.name, MANIFEST_NAME, time.monotonic() - started)
    if not problems:
        return None
    return (
        f"The model at {directory} does not match its {MANIFEST_NAME}: {', '.join(problems)}. "
        "It was changed or damaged after the export; export it again with `bot export`."
    )


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
