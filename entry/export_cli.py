"""`bot export`: convert a Hugging Face checkpoint to OpenVINO and make it the current model.

Every ``optimum-cli export openvino`` parameter is an option here, defaulting to the
reference parameters (``--task text-generation-with-past --weight-format int4
--group-size 128 --ratio 0.6 --sym --trust-remote-code``).  A running bot that
follows the current export switches to the new model without dropping a reply.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from tqdm import tqdm

from bot.settings import Settings
from entry.startup import settings_or_exit
from model.export import STAGES, ExportResult, ExportTarget, ProgressEvent, export_model
from model.export_checks import ExportError, missing_export_packages
from model.export_cleanup import clean_exports
from model.export_options import (
    DEFAULT_SOURCE,
    REFERENCE_OPTIONS,
    ExportOptions,
    ExportRequest,
    ExportRequestError,
    build_options,
)
from model.manifest import write_json_atomically

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
_REF = REFERENCE_OPTIONS
OVMS_CONFIG = "config.json"
OVMS_GRAPH_NAME = "graph.pbtxt"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# deploy/ovms/graph.pbtxt, kept here so that an installed bot can write it (a test keeps the two the same).
OVMS_GRAPH = """# OpenVINO Model Server graph for the bot's model (Phi-3-mini-4k-instruct, int4, from `bot export`).
# It lives in the model's directory, beside the exported files, and serves /v3/completions and
# /v3/chat/completions with continuous batching and prefix caching.  `bot export --for-ovms DIR` writes it.
input_stream: "HTTP_REQUEST_PAYLOAD:input"
output_stream: "HTTP_RESPONSE_PAYLOAD:output"

node: {
  name: "LLMExecutor"
  calculator: "HttpLLMCalculator"
  input_stream: "LOOPBACK:loopback"
  input_stream: "HTTP_REQUEST_PAYLOAD:input"
  input_side_packet: "LLM_NODE_RESOURCES:llm"
  output_stream: "LOOPBACK:loopback"
  output_stream: "HTTP_RESPONSE_PAYLOAD:output"
  input_stream_info: {
    tag_index: 'LOOPBACK:0',
    back_edge: true
  }
  node_options: {
      [type.googleapis.com / mediapipe.LLMCalculatorOptions]: {
          # Relative to the model's base_path in config.json: the graph sits in the export's directory.
          models_path: "./",
          device: "CPU",
          # The same runtime properties as the bot's in-process engine (BOT_OV_PROPERTIES' default).
          plugin_config: '{"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}',
          # A follow-up re-sends its conversation's history: cached KV blocks skip reading it again.
          enable_prefix_caching: true,
          # GB of KV cache; Phi-3-mini needs about 0.2 MB per token at u8, so 4 GB keeps ~20,000 tokens.
          cache_size: 4,
          # Replies generated together; keep BOT_ENGINE_CAPACITY at or below it.
          max_num_seqs: 8
      }
  }
  input_stream_handler {
    input_stream_handler: "SyncSetInputStreamHandler",
    options {
      [mediapipe.SyncSetInputStreamHandlerOptions.ext] {
        sync_set {
          tag_index: "LOOPBACK:0"
        }
      }
    }
  }
}
"""


def _help(name: str) -> str:
    return ExportOptions.model_fields[name].description or ""


def export(
    model: Annotated[str, typer.Option("--model", "-m", help="Hugging Face model id or checkpoint directory.")] = (
        DEFAULT_SOURCE
    ),
    task: Annotated[str, typer.Option(help=_help("task"))] = _REF.task,
    weight_format: Annotated[str | None, typer.Option(help=_help("weight_format"))] = _REF.weight_format,
    group_size: Annotated[int | None, typer.Option(help=_help("group_size"))] = _REF.group_size,
    ratio: Annotated[float | None, typer.Option(help=_help("ratio"))] = _REF.ratio,
    sym: Annotated[bool, typer.Option("--sym/--no-sym", help=_help("sym"))] = _REF.sym,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code/--no-trust-remote-code", help=_help("trust_remote_code"))
    ] = _REF.trust_remote_code,
    framework: Annotated[str | None, typer.Option(help=_help("framework"))] = None,
    quant_mode: Annotated[str | None, typer.Option(help=_help("quant_mode"))] = None,
    library: Annotated[str | None, typer.Option(help=_help("library"))] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", "--cache_dir", help=_help("cache_dir"))] = None,
    pad_token_id: Annotated[int | None, typer.Option(help=_help("pad_token_id"))] = None,
    variant: Annotated[str | None, typer.Option(help=_help("variant"))] = None,
    group_size_fallback: Annotated[str | None, typer.Option(help=_help("group_size_fallback"))] = None,
    backup_precision: Annotated[str | None, typer.Option(help=_help("backup_precision"))] = None,
    dataset: Annotated[str | None, typer.Option(help=_help("dataset"))] = None,
    all_layers: Annotated[bool, typer.Option("--all-layers", help=_help("all_layers"))] = False,
    awq: Annotated[bool, typer.Option("--awq", help=_help("awq"))] = False,
    scale_estimation: Annotated[bool, typer.Option("--scale-estimation", help=_help("scale_estimation"))] = False,
    gptq: Annotated[bool, typer.Option("--gptq", help=_help("gptq"))] = False,
    lora_correction: Annotated[bool, typer.Option("--lora-correction", help=_help("lora_correction"))] = False,
    sensitivity_metric: Annotated[str | None, typer.Option(help=_help("sensitivity_metric"))] = None,
    quantization_statistics_path: Annotated[
        Path | None, typer.Option(help=_help("quantization_statistics_path"))
    ] = None,
    num_samples: Annotated[int | None, typer.Option(help=_help("num_samples"))] = None,
    disable_stateful: Annotated[bool, typer.Option("--disable-stateful", help=_help("disable_stateful"))] = False,
    disable_convert_tokenizer: Annotated[
        bool, typer.Option("--disable-convert-tokenizer", help=_help("disable_convert_tokenizer"))
    ] = False,
    smooth_quant_alpha: Annotated[float | None, typer.Option(help=_help("smooth_quant_alpha"))] = None,
    model_kwargs: Annotated[str | None, typer.Option(help=_help("model_kwargs"))] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print all of optimum-cli's output.")] = False,
    for_ovms: Annotated[
        Path | None,
        typer.Option(
            "--for-ovms",
            help="Also place the export where OpenVINO Model Server reads it: DIR/<model name>/ with its "
            "graph.pbtxt (continuous batching, prefix caching) and DIR/config.json listing it.",
        ),
    ] = None,
) -> None:
    """Export a checkpoint to OpenVINO (int4 by default), validate it and make it the current model."""
    arguments = dict(locals())  # every parameter above but the last two is an ExportOptions field
    values = {name: value for name, value in arguments.items() if name in ExportOptions.model_fields}
    if for_ovms is not None:
        _refuse_bad_repository(for_ovms)  # before an export that may take an hour
    result = run_export(model, values, verbose=verbose)
    if for_ovms is not None:
        name = ovms_name(model)
        place_for_ovms(result.path, for_ovms, name, settings_or_exit().device)
        typer.echo(ovms_instructions(for_ovms, name))


def run_export(source: str, values: dict[str, Any], *, verbose: bool = False) -> ExportResult:
    """Check the extra and the parameters, export with a progress bar, report; exit non-zero on failure."""
    try:
        request = ExportRequest(source, build_options(values))
    except ExportRequestError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    missing = missing_export_packages()
    if missing:
        typer.echo(
            f"`bot export` needs the export extra (missing: {', '.join(missing)}).\n"
            "Install it with: pip install -e '.[export]'",
            err=True,
        )
        raise typer.Exit(EXIT_FAILED)
    settings = settings_or_exit()
    target = ExportTarget(
        settings.models_dir,
        settings.device,
        settings.runtime_properties(),
        time_limit_s=settings.export_time_limit_s,
        hf_token=settings.hf_token,
    )
    _clean_up(settings)
    with TerminalProgress(verbose=verbose) as progress:
        try:
            result = asyncio.run(export_model(request, target, progress.on_event, requested_by=_user()))
        except ExportError as error:
            progress.close()
            typer.echo(f"Export failed: {error}", err=True)
            raise typer.Exit(EXIT_FAILED) from None
        progress.close(complete=True)
    typer.echo(_summary(result, settings))
    return result


def _clean_up(settings: Settings) -> None:
    """Remove what killed exports left behind and prune old exports, saying what went."""
    pinned = [settings.model_path] if settings.model_path else []
    for path in clean_exports(settings.models_dir, settings.exports_kept, pinned):
        typer.echo(f"Removed old or unfinished export {path.name}", err=True)


def _user() -> str:
    try:
        return f"{getpass.getuser()} (command line)"
    except (KeyError, OSError):  # no user name for this uid, e.g. in a container
        return "command line"


def _summary(result: ExportResult, settings: Settings) -> str:
    validation = result.manifest.get("validation", {})
    lines = [
        f"Exported and validated in {result.seconds:.0f} s: {result.path}",
        f"Validation generated {validation.get('generated_tokens')} tokens through the "
        f"{validation.get('template')} prompt format.",
        "It is now the current model: `bot run` loads it, and a running bot switches to it.",
    ]
    if settings.model_path is not None:
        lines.append(f"Note: BOT_MODEL_PATH={settings.model_path} is set and takes precedence; unset it to use this.")
    return "\n".join(lines)


class TerminalProgress:
    """A tqdm bar over the export stages; optimum-cli's latest line shows beside it."""

    def __init__(self, *, verbose: bool) -> None:
        self._verbose = verbose
        layout = "{desc:<30} {bar:24} {n_fmt}/{total_fmt} [{elapsed}] {postfix}"
        self._bar = tqdm(total=len(STAGES), unit="step", bar_format=layout, dynamic_ncols=True)
        self._bar.set_description_str(STAGES[0])

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    async def on_event(self, event: ProgressEvent) -> None:
        """Advance the bar on a stage change; show (or, verbose, print) output lines."""
        if event.line is None:
            self._bar.n = event.step - 1
            self._bar.set_description_str(event.stage, refresh=False)
            self._bar.set_postfix_str("")
        elif self._verbose:
            self._bar.write(event.line)
        else:
            self._bar.set_postfix_str(event.line.strip()[:50])

    def close(self, *, complete: bool = False) -> None:
        """Finish the bar; ``complete`` fills it (every stage ran)."""
        if complete:
            self._bar.n = len(STAGES)
            self._bar.set_description_str("Done", refresh=False)
            self._bar.set_postfix_str("")
        self._bar.close()


class OvmsRepositoryError(ValueError):
    """The OVMS model repository cannot take the export; ``str()`` says why."""


def ovms_name(source: str) -> str:
    """The name OVMS serves an export under: the checkpoint's last path part (``Phi-3-mini-4k-instruct``)."""
    return _UNSAFE_NAME.sub("-", Path(source.rstrip("/")).name).strip("-.") or "model"


def ovms_graph(device: str) -> str:
    """The model-server graph for an export, generating on ``device``."""
    return OVMS_GRAPH.replace('device: "CPU"', f'device: "{device}"')


def read_ovms_config(repository: Path) -> dict[str, Any]:
    """``repository/config.json``, or an empty OVMS configuration when there is none yet."""
    path = repository / OVMS_CONFIG
    if repository.exists() and not repository.is_dir():
        raise OvmsRepositoryError(f"{repository} is not a directory.")
    if not path.exists():
        return {"model_config_list": [], "mediapipe_config_list": []}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OvmsRepositoryError(f"{path} is not a readable JSON file ({error}); fix or remove it.") from None
    if not isinstance(config, dict) or not isinstance(config.get("mediapipe_config_list", []), list):
        raise OvmsRepositoryError(f"{path} is not an OVMS configuration (mediapipe_config_list must be a list).")
    return config


def place_for_ovms(export: Path, repository: Path, name: str, device: str = "CPU") -> Path:
    """Put ``export`` at ``repository/name`` (hard links where possible) with its graph; list it in config.json.

    An earlier model of that name is replaced whole; other models in config.json are kept.
    """
    config = read_ovms_config(repository)
    target = repository / name
    staging = repository / f".{name}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(export, staging, copy_function=_link_or_copy)
    (staging / OVMS_GRAPH_NAME).write_text(ovms_graph(device), encoding="utf-8")
    if target.exists():
        old = repository / f".{name}.replaced"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)
    entries = [
        e for e in config.get("mediapipe_config_list", []) if not (isinstance(e, dict) and e.get("name") == name)
    ]
    config["mediapipe_config_list"] = [*entries, {"name": name, "base_path": name}]
    config.setdefault("model_config_list", [])
    write_json_atomically(repository / OVMS_CONFIG, config)
    # Written private (mkstemp); OVMS runs as its own user in its container and must read it.
    (repository / OVMS_CONFIG).chmod(0o644)
    return target


def _link_or_copy(source: str, destination: str) -> None:
    # An export never changes once complete, so sharing its files costs no disk; another file system cannot.
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def ovms_instructions(repository: Path, name: str) -> str:
    """How to serve the placed export with OVMS and point the bot at it."""
    where = repository.resolve()
    return "\n".join(
        [
            f"Placed for OpenVINO Model Server as {name} in {where} (graph.pbtxt, config.json). Serve it with:",
            f"  docker run -d --rm -p 8000:8000 -v {where}:/models:ro openvino/model_server:latest "
            "--rest_port 8000 --config_path /models/config.json",
            f"or: OVMS_MODELS_DIR={where} docker compose -f deploy/compose.yaml up -d",
            f"Then run the bot with BOT_ENGINE_URL=http://<host>:8000/v3 BOT_ENGINE_MODEL={name} "
            f"BOT_MODEL_PATH={where / name}",
        ]
    )


def _refuse_bad_repository(repository: Path) -> None:
    try:
        read_ovms_config(repository)
    except OvmsRepositoryError as error:
        typer.echo(f"--for-ovms: {error}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
