"""What an export does: optimum-cli's ``export openvino`` parameters and their reference defaults.

The defaults are the reference parameters for Phi-3-mini on CPU::

    --task text-generation-with-past --weight-format int4 --group-size 128 --ratio 0.6 --sym --trust-remote-code

``ExportOptions`` validates every parameter before a child process is started, and
``parse_export_argument`` reads the same parameters from a chat command (see ``EXPORT_USAGE``).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_SOURCE = "microsoft/Phi-3-mini-4k-instruct"
REFERENCE_ARGS = (
    "--task text-generation-with-past --weight-format int4 --group-size 128 --ratio 0.6 --sym --trust-remote-code"
)

WeightFormat = Literal["fp32", "fp16", "int8", "int4", "mxfp4", "nf4", "cb4"]
QuantMode = Literal["int8", "f8e4m3", "f8e5m2", "cb4_f8e4m3", "int4_f8e4m3", "int4_f8e5m2"]
Library = Literal["transformers", "diffusers", "timm", "sentence_transformers", "open_clip", "kokoro"]
GroupSizeFallback = Literal["error", "ignore", "adjust"]
BackupPrecision = Literal["none", "int8_sym", "int8_asym"]
SensitivityMetric = Literal[
    "weight_quantization_error",
    "hessian_input_activation",
    "mean_activation_variance",
    "max_activation_variance",
    "mean_activation_magnitude",
]

# Weight formats whose weights are quantized in groups, so the group size must fit the layers.
GROUPED_FORMATS = frozenset({"int4", "nf4", "mxfp4", "cb4"})
# Group sizes offered when the requested one does not divide the model's layer widths.
CANDIDATE_GROUP_SIZES = (32, 64, 128, 256, 512)
# optimum-cli spells one option with an underscore; every other one uses hyphens.
_FLAG_SPELLING = {"cache_dir": "--cache_dir"}


class ExportOptions(BaseModel):
    """Every ``optimum-cli export openvino`` parameter; ``None``/``False`` leaves optimum's own default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(default="text-generation-with-past", min_length=1, description="Export task.")
    weight_format: WeightFormat | None = Field(
        default="int4", description="Weight format (fp32, fp16, int8, int4, ...)."
    )
    group_size: int | None = Field(default=128, description="Quantization group size; -1 quantizes per column.")
    ratio: float | None = Field(default=0.6, ge=0.0, le=1.0, description="Share of 4-bit layers (the rest get int8).")
    sym: bool = Field(default=True, description="Symmetric quantization.")
    trust_remote_code: bool = Field(default=True, description="Allow the checkpoint's own modelling code.")
    framework: Literal["pt"] | None = Field(default=None, description="Framework to export from.")
    quant_mode: QuantMode | None = Field(default=None, description="Full (weights and activations) quantization mode.")
    library: Library | None = Field(default=None, description="Library used to load the checkpoint.")
    cache_dir: Path | None = Field(default=None, description="Where downloaded checkpoints are cached.")
    pad_token_id: int | None = Field(default=None, description="Padding token id when the tokenizer has none.")
    variant: str | None = Field(default=None, description="Load weights from this variant file name.")
    group_size_fallback: GroupSizeFallback | None = Field(
        default=None, description="What to do with layers the group size does not fit."
    )
    backup_precision: BackupPrecision | None = Field(default=None, description="Precision of the layers not in 4 bits.")
    dataset: str | None = Field(default=None, description="Dataset for data-aware compression (needs network).")
    all_layers: bool = Field(default=False, description="Compress embeddings and the last layer to 4 bits too.")
    awq: bool = Field(default=False, description="Apply AWQ.")
    scale_estimation: bool = Field(default=False, description="Apply scale estimation (needs --dataset).")
    gptq: bool = Field(default=False, description="Apply GPTQ (needs --dataset).")
    lora_correction: bool = Field(default=False, description="Apply LoRA correction (needs --dataset).")
    sensitivity_metric: SensitivityMetric | None = Field(
        default=None, description="Metric for mixed-precision assignment."
    )
    quantization_statistics_path: Path | None = Field(default=None, description="Where to keep data-aware statistics.")
    num_samples: int | None = Field(default=None, ge=1, description="Dataset samples for data-aware compression.")
    disable_stateful: bool = Field(default=False, description="Export a stateless model (slower).")
    disable_convert_tokenizer: bool = Field(
        default=False, description="Skip the OpenVINO tokenizer (the bot needs it)."
    )
    smooth_quant_alpha: float | None = Field(default=None, description="SmoothQuant alpha for activation quantization.")
    model_kwargs: str | None = Field(default=None, description="JSON object of extra model arguments.")

    @model_validator(mode="before")
    @classmethod
    def _quant_mode_replaces_weight_format(cls, data: Any) -> Any:
        # optimum-cli refuses both flags together; the reference int4 default gives way to --quant-mode.
        if not isinstance(data, dict) or data.get("quant_mode") is None:
            return data
        if data.get("weight_format", "int4") not in (None, "int4"):
            raise ValueError("--quant-mode cannot be combined with --weight-format: choose one")
        return {**data, "weight_format": None}

    @field_validator("group_size")
    @classmethod
    def _group_size_valid(cls, value: int | None) -> int | None:
        if value is not None and value != -1 and value < 1:
            raise ValueError("must be a positive number, or -1 for per-column quantization")
        return value

    @field_validator("model_kwargs")
    @classmethod
    def _model_kwargs_json(cls, value: str | None) -> str | None:
        if value is not None and not isinstance(_loads_or_none(value), dict):
            raise ValueError("must be a JSON object, for example '{\"use_cache\": true}'")
        return value

    def cli_args(self) -> list[str]:
        """The options as optimum-cli arguments, in declaration order."""
        args: list[str] = []
        for name, value in self.model_dump().items():
            if value is None or value is False:
                continue
            args.append(flag_of(name))
            if value is not True:
                args.append(str(value))
        return args

    def differences(self) -> dict[str, Any]:
        """The options that differ from the reference parameters."""
        reference = REFERENCE_OPTIONS.model_dump()
        return {name: value for name, value in self.model_dump(mode="json").items() if reference[name] != value}

    def absolute(self) -> ExportOptions:
        """These options with every path made absolute (the converter runs in a scratch directory)."""
        update = {name: getattr(self, name).expanduser().absolute() for name in self.path_options()}
        return self.model_copy(update=update)

    def path_options(self) -> list[str]:
        """The path-valued options that are set."""
        return [name for name in PATH_FIELDS if getattr(self, name) is not None]

    def uses_groups(self) -> bool:
        """Whether weights are quantized in groups of ``group_size`` that must fit every layer."""
        if self.group_size in (None, -1) or self.group_size_fallback in ("ignore", "adjust"):
            return False
        return self.weight_format in GROUPED_FORMATS or (self.quant_mode or "").startswith("int4")


REFERENCE_OPTIONS = ExportOptions()
# Options that name a place on the bot's machine: the terminal may set them, chat may not.
PATH_FIELDS = tuple(name for name, field in ExportOptions.model_fields.items() if "Path" in str(field.annotation))


def flag_of(name: str) -> str:
    """The optimum-cli flag for the option field ``name``."""
    return _FLAG_SPELLING.get(name, "--" + name.replace("_", "-"))


def _loads_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def group_size_problem(options: ExportOptions, widths: Mapping[str, int]) -> str | None:
    """Why ``options.group_size`` cannot quantize layers of these widths, or ``None`` if it can."""
    if not options.uses_groups() or not widths:
        return None
    size = options.group_size or 0
    misfits = [f"{name} {width}" for name, width in widths.items() if width % size]
    if not misfits:
        return None
    workable = [
        str(candidate) for candidate in CANDIDATE_GROUP_SIZES if all(w % candidate == 0 for w in widths.values())
    ]
    workable.append("-1 (per column)")
    return (
        f"Group size {size} does not divide the model's {', '.join(misfits)}. "
        f"Group sizes that would work: {', '.join(workable)}."
    )


class ExportRequestError(ValueError):
    """An export request (chat argument or CLI options) is malformed; the message says how."""


@dataclass(frozen=True)
class ExportRequest:
    """A checkpoint to export (hub id or, when ``local_allowed``, a local directory) and how."""

    source: str
    options: ExportOptions
    local_allowed: bool = True


EXPORT_USAGE = (
    "Usage: /export [SOURCE] [--option VALUE ...] [--flag | --no-flag ...]   or   /export cancel\n"
    "SOURCE is a Hugging Face model id from the allowed list (BOT_EXPORT_SOURCES; the first is the default). "
    "Local checkpoints and path options (--cache-dir, ...) are for `bot export` on the bot's machine.\n"
    f"Defaults: {REFERENCE_ARGS}.\n"
    "Options are optimum-cli's, e.g. --group-size 64, --ratio 0.8, --weight-format int8, --no-sym.\n"
    f"Example: /export {DEFAULT_SOURCE} --group-size 64"
)


def parse_export_argument(argument: str, default_source: str = DEFAULT_SOURCE) -> ExportRequest:
    """Read ``[SOURCE] [--option VALUE] [--flag|--no-flag]`` as a chat admin typed it."""
    try:
        tokens = shlex.split(argument)
    except ValueError as error:
        raise ExportRequestError(f"Could not read the export arguments ({error}).") from None
    values: dict[str, Any] = {}
    sources: list[str] = []
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("-"):
            sources.append(token)
            continue
        name, value = _read_option(token, tokens)
        if name == "model":
            sources.append(str(value))
        else:
            values[name] = value
    if len(sources) > 1:
        raise ExportRequestError(f"Give one model to export, not {len(sources)}: {', '.join(sources)}.")
    return ExportRequest(sources[0] if sources else default_source, build_options(values))


def build_options(values: Mapping[str, Any]) -> ExportOptions:
    """``ExportOptions`` from field values, with each invalid one explained by its flag."""
    try:
        return ExportOptions(**values)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            field = str(item["loc"][0]) if item["loc"] else ""
            message = str(item["msg"]).removeprefix("Value error, ")
            problems.append(f"{flag_of(field)}: {message}" if field else message)
        raise ExportRequestError("Bad export parameters: " + "; ".join(problems)) from None


def _read_option(token: str, rest: list[str]) -> tuple[str, Any]:
    flag, _, inline = token.partition("=")
    name = flag.lstrip("-").replace("-", "_")
    if flag in ("-m", "--model"):
        name = "model"
    negated = name.startswith("no_") and name[3:] in _BOOLEAN_FIELDS
    if negated or name in _BOOLEAN_FIELDS:
        if inline:
            raise ExportRequestError(
                f"{flag} is a switch and takes no value (use --no-{flag.lstrip('-')} to turn it off)."
            )
        return (name[3:], False) if negated else (name, True)
    if name != "model" and name not in ExportOptions.model_fields:
        raise ExportRequestError(f"Unknown export option {flag}. {_KNOWN_OPTIONS}")
    if inline:
        return name, inline
    if not rest or rest[0].startswith("--"):
        raise ExportRequestError(f"{flag} needs a value.")
    return name, rest.pop(0)


_BOOLEAN_FIELDS = frozenset(name for name, field in ExportOptions.model_fields.items() if field.annotation is bool)
_KNOWN_OPTIONS = "Known options: " + ", ".join(flag_of(name) for name in ExportOptions.model_fields) + "."


# model_kwargs keys that would name a place on the bot's machine, or turn on remote code, from chat.
_UNSAFE_KWARG = re.compile(r"dir|path|file|folder|remote_code|token", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def chat_export_request(argument: str, allowed_sources: Sequence[str]) -> ExportRequest:
    """Read a chat ``/export`` argument and hold it to what chat may ask for, or raise ``ExportRequestError``.

    The source must be one of ``allowed_sources`` (hub ids; the first is the default), never a local path;
    no path-valued option is accepted.  Remote code is thus only ever trusted for an allowlisted source.
    """
    allowed = [source for source in allowed_sources if _HUB_ID.match(source)]
    if not allowed:
        raise ExportRequestError("Exporting from chat is turned off: BOT_EXPORT_SOURCES lists no Hugging Face model.")
    request = parse_export_argument(argument, default_source=allowed[0])
    listing = f"Sources allowed from chat: {', '.join(allowed)}."
    terminal = "Use `bot export` on the bot's machine for anything else."
    if not _HUB_ID.match(request.source) or ".." in request.source:
        raise ExportRequestError(f"Local paths cannot be exported from chat ({request.source}). {listing} {terminal}")
    match = next((source for source in allowed if source.casefold() == request.source.casefold()), None)
    if match is None:
        raise ExportRequestError(f"{request.source} is not allowed from chat. {listing} {terminal}")
    refused = ["--" + name.replace("_", "-") for name in request.options.path_options()]
    if refused:
        raise ExportRequestError(
            f"{', '.join(refused)} cannot be set from chat: it names a place on the bot's machine. {terminal}"
        )
    kwargs = json.loads(request.options.model_kwargs) if request.options.model_kwargs else {}
    unsafe = sorted(key for key in kwargs if _UNSAFE_KWARG.search(str(key)))
    if unsafe:
        raise ExportRequestError(f"--model-kwargs cannot set {', '.join(unsafe)} from chat. {terminal}")
    return ExportRequest(match, request.options, local_allowed=False)
