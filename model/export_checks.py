"""Checks before an export starts, and explanations when one fails.

Everything that can be known before the child process runs is checked here, so a
bad request fails in a second with a reason instead of minutes into a conversion:
the export extra is installed, the source exists, the group size fits the model,
and there is room on disk.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from model.export_options import ExportOptions, group_size_problem

EXPORT_EXTRA_HINT = "pip install -e '.[export]'"
# Module to find -> distribution that provides it.
EXPORT_MODULES = {
    "optimum.intel": "optimum-intel",
    "nncf": "nncf",
    "torch": "torch",
    "accelerate": "accelerate",
    "transformers": "transformers",
}
RECORDED_LIBRARIES = (
    "optimum-intel",
    "optimum",
    "transformers",
    "torch",
    "nncf",
    "accelerate",
    "tokenizers",
    "openvino",
    "openvino-tokenizers",
    "openvino-genai",
)
# Output size relative to the checkpoint's weight files, by weight format (None: optimum decides).
_SIZE_FACTOR = {"fp32": 2.0, "fp16": 1.0, "int8": 0.6, None: 2.0}
_FOUR_BIT_FACTOR = 0.45
_DISK_MARGIN = 256 << 20
# Free space a hub export needs when its size is unknown: a Phi-3-mini int4 export with room to spare.
HUB_MINIMUM_FREE = 4 << 30
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# config.json key -> how a message names it.
_WIDTH_KEYS = {"hidden_size": "hidden size", "intermediate_size": "intermediate size"}


class ExportError(RuntimeError):
    """An export could not be done; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """Where a checkpoint comes from, with what was learnt about it before exporting."""

    kind: Literal["local", "hub"]
    location: str
    widths: dict[str, int] = field(default_factory=dict)
    weight_bytes: int | None = None


def missing_export_packages() -> list[str]:
    """Distributions of the ``export`` extra that are not installed."""
    missing = []
    for module, distribution in EXPORT_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(distribution)
    return missing


def require_export_extra() -> None:
    """Raise ``ExportError`` naming what to install when the export extra is missing."""
    missing = missing_export_packages()
    if missing:
        raise ExportError(
            f"Model export needs the `export` extra, which is not installed (missing: {', '.join(missing)}). "
            f"Install it with: {EXPORT_EXTRA_HINT}"
        )


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape an export."""
    versions = {}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def resolve_source(
    source: str, options: ExportOptions, *, local_allowed: bool = True, token: str | None = None
) -> Source:
    """Find the checkpoint, read its layer widths and size (blocking: may ask the Hugging Face Hub).

    Without ``local_allowed`` (a chat request) ``source`` is always a hub id, even where a directory of
    that name exists.
    """
    looks_local = source.startswith(("/", ".", "~")) or "\\" in source or not _HUB_ID.match(source)
    if not local_allowed and looks_local:
        raise ExportError(f"{source} is not a Hugging Face model id; local checkpoints are for `bot export`.")
    path = Path(source).expanduser()
    if local_allowed and path.exists():
        return _local_source(path)
    if looks_local:
        raise ExportError(f"The checkpoint directory {source} does not exist on this machine.")
    config = _hub_config(source, options.cache_dir, token)
    return Source("hub", source, widths=_widths(config), weight_bytes=_hub_weight_bytes(source, token))


def check_group_size(source: Source, options: ExportOptions) -> None:
    """Refuse a group size that does not divide the model's layer widths."""
    problem = group_size_problem(options, source.widths)
    if problem:
        raise ExportError(problem)


def check_disk_space(source: Source, options: ExportOptions, target: Path) -> None:
    """Refuse when the export clearly will not fit on the disk holding ``target``.

    A hub checkpoint whose file sizes the Hub did not give (offline, say) needs ``HUB_MINIMUM_FREE``.
    """
    if source.weight_bytes is not None:
        factor = _SIZE_FACTOR.get(options.weight_format, _FOUR_BIT_FACTOR)
        needed = int(source.weight_bytes * factor) + _DISK_MARGIN
    elif source.kind == "hub":
        needed = HUB_MINIMUM_FREE
    else:
        return
    free = free_bytes(target)
    if free < needed:
        raise ExportError(
            f"Not enough disk space for the export: about {_mib(needed)} needed in {target}, "
            f"{_mib(free)} free. Free some space or set BOT_DATA_DIR to a larger disk."
        )


def free_bytes(path: Path) -> int:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def explain_failure(returncode: int, output: Sequence[str], source: Source, target: Path) -> str:
    """Why optimum-cli failed, in words, from its exit status and last output lines."""
    text = "\n".join(output)
    if returncode < 0 and returncode in (-9, -15):
        return f"The export process was killed (signal {-returncode}); the machine most likely ran out of memory."
    for pattern, reason in _FAILURE_CAUSES:
        if pattern.search(text):
            return reason.format(source=source.location, target=target, free=_mib(free_bytes(target)))
    if free_bytes(target) < _DISK_MARGIN // 4:
        return f"Out of disk space in {target} ({_mib(free_bytes(target))} free)."
    return f"optimum-cli failed (exit status {returncode}): {_last_error(output)}"


_FAILURE_CAUSES = (
    (
        re.compile(r"No space left on device|ENOSPC|Not enough space", re.IGNORECASE),
        "Out of disk space while exporting into {target} ({free} free). Free some space and try again.",
    ),
    (
        re.compile(
            r"OfflineModeIsEnabled|LocalEntryNotFoundError|Name or service not known|Temporary failure in name "
            r"resolution|ConnectError|ConnectionError|Max retries exceeded|couldn't connect|client has been closed",
            re.IGNORECASE,
        ),
        "Could not download {source} from the Hugging Face Hub: no network connection. "
        "Export from a local checkpoint directory instead (bot export --model /path/to/checkpoint).",
    ),
    (
        re.compile(r"RepositoryNotFoundError|is not a valid model identifier|404 Client Error", re.IGNORECASE),
        "There is no model {source} on the Hugging Face Hub (or it is private).",
    ),
    (
        re.compile(r"\bMemoryError\b|out of memory|Cannot allocate memory", re.IGNORECASE),
        "The export ran out of memory.",
    ),
)
_ERROR_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit)\b.*:")


def _last_error(output: Sequence[str]) -> str:
    for line in reversed(output):
        if _ERROR_LINE.match(line.strip()):
            return line.strip()
    return output[-1].strip() if output else "no output"


def _local_source(path: Path) -> Source:
    config_path = path / "config.json"
    if not path.is_dir() or not config_path.is_file():
        raise ExportError(f"{path} is not a Hugging Face checkpoint directory (it has no config.json).")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ExportError(f"{config_path} is not valid JSON ({error}).") from None
    weights = sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    return Source("local", str(path.resolve()), widths=_widths(config), weight_bytes=weights)


def _hub_config(repo_id: str, cache_dir: Path | None, token: str | None = None) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        path = hf_hub_download(repo_id, "config.json", cache_dir=cache_dir, token=token)
    except GatedRepoError:
        raise ExportError(f"{repo_id} is gated on the Hugging Face Hub: accept its licence and log in first.") from None
    except RepositoryNotFoundError:
        raise ExportError(f"There is no model {repo_id} on the Hugging Face Hub (or it is private).") from None
    except Exception as error:  # the hub raises many kinds for "offline"; each means the same here
        raise ExportError(
            f"Could not reach the Hugging Face Hub for {repo_id} ({type(error).__name__}): no network connection "
            "and no cached copy. Export from a local checkpoint directory instead "
            "(bot export --model /path/to/checkpoint)."
        ) from None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _hub_weight_bytes(repo_id: str, token: str | None) -> int | None:
    """The size of a hub checkpoint's weight files, or ``None`` when the Hub cannot say (offline, say)."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(token=token).model_info(repo_id, files_metadata=True, timeout=30)
    except Exception:  # offline or any hub trouble: the caller falls back to a fixed minimum
        return None
    files = {entry.rfilename: entry.size for entry in info.siblings or () if entry.size is not None}
    # Repositories often carry the same weights twice (safetensors and .bin); the converter reads one.
    suffixes = (".safetensors",) if any(name.endswith(".safetensors") for name in files) else _WEIGHT_SUFFIXES
    sizes = [size for name, size in files.items() if name.endswith(suffixes)]
    return sum(sizes) if sizes else None


def _widths(config: dict[str, Any]) -> dict[str, int]:
    """Input widths of the model's matrix multiplications that group quantization splits."""
    text_config = config.get("text_config")
    if "hidden_size" not in config and isinstance(text_config, dict):
        config = text_config
    return {label: int(config[key]) for key, label in _WIDTH_KEYS.items() if isinstance(config.get(key), int)}


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.0f} MiB"
