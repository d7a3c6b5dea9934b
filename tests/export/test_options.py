"""Export parameters: reference defaults, chat argument parsing, group-size and failure explanations."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.export_checks import ExportError, Source, check_disk_space, explain_failure, resolve_source
from model.export_options import (
    DEFAULT_SOURCE,
    REFERENCE_ARGS,
    REFERENCE_OPTIONS,
    ExportOptions,
    ExportRequestError,
    group_size_problem,
    parse_export_argument,
)


def test_defaults_are_the_reference_parameters() -> None:
    assert REFERENCE_OPTIONS.cli_args() == shlex.split(REFERENCE_ARGS)
    assert REFERENCE_OPTIONS.differences() == {}


def test_empty_argument_exports_the_default_model_with_reference_parameters() -> None:
    request = parse_export_argument("")
    assert request.source == DEFAULT_SOURCE
    assert request.options == REFERENCE_OPTIONS


def test_source_and_overrides() -> None:
    request = parse_export_argument("microsoft/Phi-3-mini-4k-instruct --group-size 64 --ratio=0.8 --no-sym --awq")
    assert request.source == "microsoft/Phi-3-mini-4k-instruct"
    assert request.options.differences() == {"group_size": 64, "ratio": 0.8, "sym": False, "awq": True}
    assert request.options.cli_args()[-4:] == ["--ratio", "0.8", "--trust-remote-code", "--awq"]
    assert "--sym" not in request.options.cli_args()


def test_model_option_quoted_path_and_per_column_group_size() -> None:
    request = parse_export_argument("--model '/srv/my models/phi3' --group-size -1 --cache_dir /tmp/hf")
    assert request.source == "/srv/my models/phi3"
    assert request.options.group_size == -1
    assert request.options.cli_args()[-2:] == ["--cache_dir", "/tmp/hf"]


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("--group-size abc", "--group-size: Input should be a valid integer"),
        ("--group-size 0", "--group-size: must be a positive number"),
        ("--ratio 1.5", "--ratio: Input should be less than or equal to 1"),
        ("--weight-format int3", "--weight-format: Input should be"),
        ("--frobnicate 3", "Unknown export option --frobnicate"),
        ("--group-size", "--group-size needs a value"),
        ("--sym=yes", "--sym is a switch"),
        ("one/model other/model", "Give one model to export, not 2"),
        ("'unbalanced", "Could not read the export arguments"),
        ("--model-kwargs notjson", "--model-kwargs: must be a JSON object"),
    ],
)
def test_bad_arguments_are_explained(argument: str, expected: str) -> None:
    with pytest.raises(ExportRequestError) as caught:
        parse_export_argument(argument)
    assert expected in str(caught.value)


@given(
    group_size=st.sampled_from([-1, 32, 64, 128]),
    ratio=st.floats(min_value=0, max_value=1, allow_nan=False),
    sym=st.booleans(),
    weight_format=st.sampled_from(["int4", "int8", "fp16", "nf4"]),
)
def test_cli_args_parse_back_to_the_same_options(group_size: int, ratio: float, sym: bool, weight_format: str) -> None:
    options = ExportOptions(group_size=group_size, ratio=ratio, sym=sym, weight_format=weight_format)  # type: ignore[arg-type]
    argument = shlex.join(["some/model", *options.cli_args()]) + ("" if sym else " --no-sym")
    assert parse_export_argument(argument).options == options


def test_group_size_must_divide_every_layer_width() -> None:
    widths = {"hidden size": 576, "intermediate size": 1536}
    problem = group_size_problem(REFERENCE_OPTIONS, widths)
    assert problem is not None
    assert "Group size 128 does not divide the model's hidden size 576" in problem
    assert "Group sizes that would work: 32, 64, -1 (per column)" in problem
    assert group_size_problem(ExportOptions(group_size=64), widths) is None


def test_group_size_is_not_checked_where_it_does_not_apply() -> None:
    widths = {"hidden size": 576}
    assert group_size_problem(ExportOptions(weight_format="int8"), widths) is None
    assert group_size_problem(ExportOptions(group_size=-1), widths) is None
    assert group_size_problem(ExportOptions(group_size_fallback="adjust"), widths) is None


def test_a_missing_local_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="does not exist on this machine"):
        resolve_source(str(tmp_path / "nowhere"), REFERENCE_OPTIONS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match=r"has no config\.json"):
        resolve_source(str(tmp_path / "empty"), REFERENCE_OPTIONS)


def test_not_enough_disk_space_is_refused_before_exporting(tmp_path: Path) -> None:
    huge = Source("local", str(tmp_path), weight_bytes=1 << 60)
    with pytest.raises(ExportError, match="Not enough disk space for the export"):
        check_disk_space(huge, REFERENCE_OPTIONS, tmp_path / "models")
    check_disk_space(Source("local", str(tmp_path), weight_bytes=1 << 20), REFERENCE_OPTIONS, tmp_path / "models")


@pytest.mark.parametrize(
    ("returncode", "output", "expected"),
    [
        (1, ["OSError: [Errno 28] No space left on device"], "Out of disk space while exporting"),
        (1, ["huggingface_hub.errors.LocalEntryNotFoundError: offline"], "no network connection"),
        (1, ["OSError: x is not a valid model identifier listed on"], "There is no model acme/x"),
        (-9, [], "killed (signal 9)"),
        (1, ["loading", "ValueError: bad things happened", "  at the end"], "exit status 1): ValueError: bad things"),
    ],
)
def test_failures_are_explained(returncode: int, output: list[str], expected: str, tmp_path: Path) -> None:
    source = Source("hub", "acme/x")
    assert expected in explain_failure(returncode, output, source, tmp_path)
