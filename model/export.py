"""Export a Hugging Face checkpoint to OpenVINO with optimum-cli, validate it, then make it current.

The conversion runs as a child process (``python -m optimum.commands.optimum_cli
export openvino ...`` of this interpreter) whose output is streamed as progress
lines.  It writes into a new versioned directory ``<models dir>/exports/<name>``;
the directory gets its manifest only after the model loaded with openvino_genai
and generated a few tokens, and only then is ``current.json`` replaced.  Any
failure removes the directory and leaves "current" as it was.
"""

from __future__ import annotations

import asyncio
import codecs
import errno
import re
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from model.engine import ChatMessage, EngineError, GenerationParams, ModelLoadError
from model.export_checks import (
    ExportError,
    Source,
    check_disk_space,
    check_group_size,
    explain_failure,
    library_versions,
    require_export_extra,
    resolve_source,
)
from model.export_options import ExportOptions, ExportRequest
from model.export_process import child_environment, kill_converter, start_converter
from model.loader import load_engine
from model.manifest import (
    MANIFEST_FORMAT,
    exports_dir,
    file_checksums,
    set_current_export,
    utc_now,
    write_manifest,
)
from model.openvino_engine import OpenVINOEngine
from model.phi3 import render_phi3

STAGES = (
    "Checking the request",
    "Converting with optimum-cli",
    "Validating the exported model",
    "Writing the manifest",
    "Switching the current model",
)
VALIDATION_PROMPT = "Say hello in one short sentence."
VALIDATION_TOKENS = 8
PHI3_TEMPLATE_TOKENS = frozenset({"<|system|>", "<|user|>", "<|assistant|>", "<|end|>"})
LOCK_NAME = ".export.lock"
# optimum-cli run by this interpreter, so that it uses this environment; the output options follow.
OPTIMUM_CLI = (sys.executable, "-m", "optimum.commands.optimum_cli", "export", "openvino")
_OUTPUT_TAIL = 40
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_UNSAFE_NAME = re.compile(r"[^\w.-]+")


class ExportBusyError(ExportError):
    """Another export holds the models directory."""


class ExportTimeoutError(ExportError):
    """The export ran past its time limit; the converter was killed and its directory removed."""


@dataclass(frozen=True)
class ProgressEvent:
    """A stage change (``line`` is ``None``) or one line of optimum-cli's output within a stage."""

    step: int
    total: int
    stage: str
    line: str | None = None


ProgressSink = Callable[[ProgressEvent], Awaitable[None]]
LineSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class ExportTarget:
    """Where exports go, how the validation loads them, and how the converter runs.

    ``converter`` replaces optimum-cli's ``export openvino`` command (the argv before ``--model``), for
    tests; ``time_limit_s`` bounds the whole export; ``hf_token`` is handed to the converter and the Hub.
    """

    models_dir: Path
    device: str = "CPU"
    properties: Mapping[str, str] = field(default_factory=dict)
    time_limit_s: float | None = None
    hf_token: SecretStr | None = None
    converter: tuple[str, ...] = OPTIMUM_CLI


@dataclass(frozen=True)
class ExportResult:
    """A validated export that "current" now points to."""

    path: Path
    manifest: dict[str, Any]
    seconds: float


async def export_model(
    request: ExportRequest, target: ExportTarget, progress: ProgressSink, *, requested_by: str = "cli"
) -> ExportResult:
    """Export, validate and activate ``request``; raise ``ExportError`` with the reason on failure.

    Past ``target.time_limit_s`` the converter is killed, the directory removed and ``ExportTimeoutError``
    raised; a cancelled export is cleaned up the same way.
    """
    limit = target.time_limit_s
    try:
        async with asyncio.timeout(limit) as deadline:
            return await _export(request, target, progress, requested_by)
    except TimeoutError:
        if not deadline.expired():
            raise  # a time-out of something inside, not the export's own limit
        raise ExportTimeoutError(
            f"The export ran past its time limit of {_duration(limit or 0)} and was stopped; its files were removed."
        ) from None


async def _export(
    request: ExportRequest, target: ExportTarget, progress: ProgressSink, requested_by: str
) -> ExportResult:
    started, started_at = time.monotonic(), utc_now()
    report = _Reporter(progress)
    await report.stage(0)
    require_export_extra()
    token = target.hf_token.get_secret_value() if target.hf_token else None
    source = await asyncio.to_thread(
        resolve_source, request.source, request.options, local_allowed=request.local_allowed, token=token
    )
    check_group_size(source, request.options)
    check_disk_space(source, request.options, target.models_dir)
    with export_lock(target.models_dir):
        directory = new_export_dir(target.models_dir, source, request.options)
        try:
            command = optimum_command(source.location, request.options, directory, target.converter)
            await report.stage(1)
            await run_optimum(command, source, directory, report.line, child_environment(target.hf_token))
            await report.stage(2)
            validation = await validate_export(directory, target)
            await report.stage(3)
            manifest = _manifest(request, source, requested_by, started_at, validation)
            manifest["files"] = await asyncio.to_thread(file_checksums, directory)
            write_manifest(directory, manifest)
            await report.stage(4)
            set_current_export(target.models_dir, directory)
        except BaseException as error:
            shutil.rmtree(directory, ignore_errors=True)  # also on cancellation: never leave a partial export
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise ExportError(f"Out of disk space while writing the export into {directory.parent}.") from error
            if isinstance(error, OSError):
                raise ExportError(f"Could not write the export into {directory.parent}: {error}") from error
            raise
    return ExportResult(directory, manifest, time.monotonic() - started)


def optimum_command(
    source: str, options: ExportOptions, output: Path, converter: Sequence[str] = OPTIMUM_CLI
) -> list[str]:
    """The converter's command line; paths are absolute, as it runs in a scratch directory."""
    return [*converter, "--model", source, *options.absolute().cli_args(), str(output.resolve())]


@contextmanager
def export_lock(models_dir: Path) -> Iterator[None]:
    """Hold the models directory's export lock, or raise ``ExportBusyError`` (also across processes)."""
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        handle = (models_dir / LOCK_NAME).open("a")
    except OSError as error:
        raise ExportError(f"Cannot write to the models directory {models_dir}: {error}") from None
    with handle:
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ExportBusyError("Another export is already running on this machine.") from None
        yield


def new_export_dir(models_dir: Path, source: Source, options: ExportOptions) -> Path:
    """Create ``exports/<checkpoint>-<format>-<UTC time>`` (a suffix keeps it new)."""
    stem = _UNSAFE_NAME.sub("-", Path(source.location).name or "model").strip("-.") or "model"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = exports_dir(models_dir) / f"{stem}-{options.weight_format or 'auto'}-{stamp}"
    for attempt in range(1, 100):
        candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as error:
            raise ExportError(f"Cannot create the export directory {candidate}: {error}") from None
        return candidate
    raise ExportError(f"Could not create a new export directory next to {base}.")


async def run_optimum(
    command: list[str], source: Source, directory: Path, on_line: LineSink, environment: Mapping[str, str]
) -> None:
    """Run the conversion, passing each output line on; raise ``ExportError`` with the cause if it fails.

    The child runs as ``model.export_process`` starts it: allowlisted environment, a scratch directory, its
    own process group (killed whole when the export is cancelled or times out), killed if the bot dies.
    """
    with tempfile.TemporaryDirectory(prefix="bot-export-", ignore_cleanup_errors=True) as scratch:
        process = await start_converter(command, Path(scratch), environment)
        tail: deque[str] = deque(maxlen=_OUTPUT_TAIL)
        try:
            assert process.stdout is not None
            async for line in output_lines(process.stdout):
                tail.append(line)
                await on_line(line)
            returncode = await process.wait()
        finally:
            await kill_converter(process)  # cancelled or timed out: the conversion must not outlive the request
    if returncode != 0:
        raise ExportError(explain_failure(returncode, list(tail), source, directory.parent))


async def output_lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    """Lines of a child's output; progress bars redraw with ``\\r``, so that ends a line too."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending, previous = "", ""
    while True:
        chunk = await stream.read(1 << 14)
        pending += decoder.decode(chunk, final=not chunk)
        *complete, pending = re.split(r"[\r\n]", pending)
        if not chunk:
            complete.append(pending)
        for raw in complete:
            line = _ANSI_ESCAPE.sub("", raw).rstrip()
            if line.strip() and line != previous:
                previous = line
                yield line
        if not chunk:
            return


async def validate_export(directory: Path, target: ExportTarget) -> dict[str, Any]:
    """Load the export with openvino_genai and generate a few tokens through its prompt format."""
    try:
        engine = await asyncio.to_thread(load_engine, directory, target.device, dict(target.properties))
    except ModelLoadError as error:
        raise ExportError(f"The exported model does not load: {error}") from None
    try:
        return await _try_generation(engine)
    finally:
        await engine.aclose()


async def _try_generation(engine: OpenVINOEngine) -> dict[str, Any]:
    messages = [ChatMessage("user", VALIDATION_PROMPT)]
    if engine.info.family == "phi3":
        missing = sorted(PHI3_TEMPLATE_TOKENS - engine.control_tokens)
        if missing:
            raise ExportError(
                f"The exported tokenizer does not treat {', '.join(missing)} as special tokens, "
                "so Phi-3 prompts would not work."
            )
        prompt = render_phi3(messages)
    else:
        prompt = engine.apply_chat_template(messages)
    stream = engine.stream(prompt, GenerationParams(max_new_tokens=VALIDATION_TOKENS))
    try:
        text = "".join([chunk async for chunk in stream])
    except EngineError as error:
        raise ExportError(f"The exported model loads but cannot generate: {error}") from None
    stats = stream.stats
    if stats is None or stats.generated_tokens < 1:
        raise ExportError("The exported model loads but generated nothing.")
    template = "phi3" if engine.info.family == "phi3" else "model's own chat template"
    return {
        "family": engine.info.family,
        "template": template,
        "prompt_tokens": stats.prompt_tokens,
        "generated_tokens": stats.generated_tokens,
        "sample": text,
    }


def _manifest(
    request: ExportRequest, source: Source, requested_by: str, started_at: str, validation: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "source": source.location,
        "source_kind": source.kind,
        "parameters": request.options.model_dump(mode="json"),
        "command": ["optimum-cli", "export", "openvino", "--model", source.location, *request.options.cli_args()],
        "requested_by": requested_by,
        "started": started_at,
        "finished": utc_now(),
        "libraries": library_versions(),
        "validation": validation,
    }


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {rest} s" if minutes else f"{seconds:g} s"


class _Reporter:
    """Turns stage numbers and output lines into ``ProgressEvent``s."""

    def __init__(self, sink: ProgressSink) -> None:
        self._sink = sink
        self._step = 0

    async def stage(self, index: int) -> None:
        self._step = index
        await self._sink(ProgressEvent(index + 1, len(STAGES), STAGES[index]))

    async def line(self, text: str) -> None:
        await self._sink(ProgressEvent(self._step + 1, len(STAGES), STAGES[self._step], text))
