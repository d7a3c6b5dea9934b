"""Export safety: secrets stay out of the child, a failed switch never undoes another export."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.export_service import _withdraw_export
from model.export import child_environment
from model.export_options import ExportOptions, ExportRequestError, parse_export_argument
from model.manifest import MANIFEST_FORMAT, current_export, set_current_export, write_manifest


def test_chat_platform_secrets_are_withheld_from_the_export_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret")
    monkeypatch.setenv("HF_HOME", "/tmp/hf")
    environment = child_environment()
    assert "DISCORD_TOKEN" not in environment and "SLACK_BOT_TOKEN" not in environment
    assert environment["HF_HOME"] == "/tmp/hf"  # what the export itself needs stays


def test_quant_mode_replaces_the_reference_weight_format() -> None:
    args = ExportOptions(quant_mode="int8").cli_args()
    assert "--quant-mode" in args and "--weight-format" not in args
    with pytest.raises(ExportRequestError, match="cannot be combined"):
        parse_export_argument("some/model --quant-mode int8 --weight-format int8")


def _export(models_dir: Path, name: str) -> Path:
    directory = models_dir / "exports" / name
    directory.mkdir(parents=True)
    write_manifest(directory, {"format": MANIFEST_FORMAT, "source": name})
    return directory


def test_failed_switch_restores_the_previous_current_export(tmp_path: Path) -> None:
    previous, failed = _export(tmp_path, "previous"), _export(tmp_path, "failed")
    set_current_export(tmp_path, failed)
    _withdraw_export(tmp_path, failed, previous)
    assert current_export(tmp_path) == previous.resolve()
    assert not failed.exists()


def test_failed_switch_leaves_a_newer_export_current(tmp_path: Path) -> None:
    failed, newer = _export(tmp_path, "failed"), _export(tmp_path, "newer")
    set_current_export(tmp_path, newer)  # a `bot export` run finished meanwhile
    _withdraw_export(tmp_path, failed, None)
    assert current_export(tmp_path) == newer.resolve()
    assert not failed.exists()
