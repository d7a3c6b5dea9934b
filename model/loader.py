"""Find, check and load the configured model.

A model is either an exported OpenVINO directory (``openvino_model.xml`` beside
its tokenizer, detokenizer and ``config.json``) or a single ``.gguf`` file.  Every
problem found before compiling is reported with what is missing and where.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model.batching_engine import BatchingEngine
from model.bundled import ensure_bundled_model
from model.endpoints import address
from model.engine import ModelFamily, ModelInfo, ModelLoadError
from model.manifest import current_export, manifest_problem
from model.openvino_engine import OpenVINOEngine
from model.process_engine import ProcessEngine
from model.remote_engine import RemoteEngine, served_model
from model.scheduler import DEFAULT_KV_CACHE_TOKENS

log = logging.getLogger(__name__)

OPENVINO_MODEL_FILES = (
    "openvino_model.xml",
    "openvino_model.bin",
    "openvino_tokenizer.xml",
    "openvino_detokenizer.xml",
)
DEFAULT_CONTEXT = 4096
# OpenVINO prefixes its messages with where in its C++ sources they were raised.
_OPENVINO_NOISE = re.compile(r"^(Exception from |Check '|\[ GENERAL_ERROR \]$)")
# ... also in the middle of a line ("loading failed, aborting. Error: Exception from src/…/vcl_api.cpp:22:").
_SOURCE_LOCATION = re.compile(r"Exception from \S+:\d+:\s*")


def resolve_model_path(model_path: Path | None, models_dir: Path, *, progress: bool = True) -> Path:
    """The configured model; when none is set, the current export, else the bundled one (fetched on first use)."""
    if model_path is None:
        exported = current_export(models_dir)
        if exported is not None:
            return exported
        return ensure_bundled_model(models_dir, progress=progress)
    if not model_path.exists():
        raise ModelLoadError(
            f"BOT_MODEL_PATH points to {model_path}, which does not exist. "
            "Export a model with `bot export`, or unset BOT_MODEL_PATH to use the bundled model."
        )
    return model_path


def inspect_model(path: Path, context_size: int | None = None) -> ModelInfo:
    """Check that ``path`` holds a complete model and read its family and context size.

    An export with a manifest must match its checksums (every file is hashed: blocking, run it in a thread).
    """
    if path.is_dir():
        problem = manifest_problem(path)
        if problem:
            raise ModelLoadError(problem)
        family, native_context, name = _inspect_openvino_dir(path)
    elif path.suffix.lower() == ".gguf":
        family, native_context, name = _inspect_gguf(path)
    else:
        raise ModelLoadError(f"{path} is neither an exported OpenVINO model directory nor a .gguf file.")
    return ModelInfo(name=name, family=family, path=path, context_size=context_size or native_context)


def load_engine(
    path: Path, device: str, properties: Mapping[str, str], context_size: int | None = None
) -> OpenVINOEngine:
    """Inspect and compile the model (blocking: run it in a thread from async code)."""
    info = inspect_model(path, context_size)
    log.info("Loading %s (%s, context %d) on %s", info.name, info.family, info.context_size, device)
    with _load_errors(path, device):
        return OpenVINOEngine.load(info, device, properties)


def load_batching_engine(
    path: Path,
    device: str,
    properties: Mapping[str, str],
    context_size: int | None = None,
    cache_tokens: int = DEFAULT_KV_CACHE_TOKENS,
) -> BatchingEngine:
    """Like ``load_engine``, but serving replies concurrently (continuous batching, a KV cache of ``cache_tokens``)."""
    info = within_cache(inspect_model(path, context_size), cache_tokens)
    log.info("Loading %s (%s, context %d) on %s, batching", info.name, info.family, info.context_size, device)
    with _load_errors(path, device):
        return BatchingEngine.load(info, device, properties, cache_tokens)


def load_process_engine(
    path: Path,
    device: str,
    properties: Mapping[str, str],
    context_size: int | None = None,
    cache_tokens: int = DEFAULT_KV_CACHE_TOKENS,
) -> ProcessEngine:
    """Like ``load_batching_engine``, but the pipeline runs in a child process so that it never stalls the loop."""
    info = within_cache(inspect_model(path, context_size), cache_tokens)
    log.info(
        "Loading %s (%s, context %d) on %s, batching in a child process",
        info.name,
        info.family,
        info.context_size,
        device,
    )
    with _load_errors(path, device):
        return ProcessEngine.load(info, device, properties, cache_tokens)


def within_cache(info: ModelInfo, cache_tokens: int) -> ModelInfo:
    """``info`` with a context no larger than the KV cache: a longer prompt could never be scheduled."""
    return dataclasses.replace(info, context_size=min(info.context_size, cache_tokens))


@contextmanager
def _load_errors(path: Path, device: str) -> Iterator[None]:
    """Turn OpenVINO's compile errors into a ``ModelLoadError`` that says which model and device."""
    try:
        yield
    except ModelLoadError:
        raise  # already says what is wrong and where
    except RuntimeError as error:
        raise ModelLoadError(f"OpenVINO could not load the model at {path} on {device}: {_cause(error)}") from error


def _cause(error: Exception) -> str:
    """The meaningful lines of an OpenVINO error, without its C++ source locations."""
    lines = [_SOURCE_LOCATION.sub("", line).strip() for line in str(error).splitlines()]
    meaningful = [line for line in lines if line and not _OPENVINO_NOISE.match(line)]
    return " ".join(meaningful) or type(error).__name__


def _inspect_openvino_dir(path: Path) -> tuple[ModelFamily, int, str]:
    missing = [name for name in OPENVINO_MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"The model directory {path} is incomplete: missing {', '.join(missing)}. Re-export it with `bot export`."
        )
    config = _read_json(path / "config.json")
    family: ModelFamily = "phi3" if config.get("model_type") == "phi3" else "generic"
    context = int(config.get("max_position_embeddings") or DEFAULT_CONTEXT)
    name = str(config.get("_name_or_path") or path.name)
    return family, context, name


def _inspect_gguf(path: Path) -> tuple[ModelFamily, int, str]:
    from gguf import GGUFReader  # imported here: only GGUF models need it

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as error:
        raise ModelLoadError(f"{path} is not a readable GGUF model ({error}).") from error
    architecture = str(_gguf_field(reader, "general.architecture") or "")
    context = _gguf_field(reader, f"{architecture}.context_length") or DEFAULT_CONTEXT
    name = path.stem  # general.name is often a training-run label; the file name is what users chose
    family: ModelFamily = "phi3" if architecture == "phi3" else "generic"
    return family, int(context), name


def _gguf_field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{path} is not valid JSON ({error}).") from error
    return data if isinstance(data, dict) else {}


# A server that is slow to list its models at start is named later rather than holding up the bot.
_NAME_LOOKUP_TIMEOUT_S = 5.0


def load_remote_engine(
    urls: Sequence[str],
    model_path: Path,
    *,
    model: str | None,
    api_key: str | None,
    capacity: int,
    timeout_s: float,
    retry_s: float,
    context_size: int | None,
) -> RemoteEngine:
    """The model served at ``urls``, with its tokenizer read from the same model at ``model_path`` (blocking).

    ``capacity`` is per server. The model's name is ``model``, else the first one a server lists; a server
    that is down at start does not stop the bot: the name is then the model file's, and requests ask the
    first server that answers for its model later.
    """
    import openvino_genai as ov_genai

    from model.openvino_engine import ChatTokenizer

    info = inspect_model(model_path, context_size)
    with _load_errors(model_path, "CPU (its tokenizer only)"):
        # The tokenizer alone (it reads a GGUF file too): the model itself is never compiled here.
        chat = ChatTokenizer(ov_genai.Tokenizer(str(model_path)), info)
    served = model or served_model(urls, api_key, min(timeout_s, _NAME_LOOKUP_TIMEOUT_S))
    if served is None:
        log.warning("No model server answered at start; naming the model %s until one does", info.name)
    chat.info = dataclasses.replace(info, name=served or info.name)
    log.info("Serving %s (%s, context %d) from %s", chat.info.name, info.family, info.context_size, _addresses(urls))
    return RemoteEngine.connect(
        urls, chat, model=served, api_key=api_key, capacity_each=capacity, timeout_s=timeout_s, retry_s=retry_s
    )


def _addresses(urls: Sequence[str]) -> str:
    # host:port only: a URL may carry credentials, which never reach a log.
    return ", ".join(address(url) for url in urls)
