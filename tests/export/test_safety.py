"""Export safety: secrets stay out of the child, a failed switch never undoes another export."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.export_service import _withdraw_export
from model.export_options import ExportOptions, ExportRequestError, parse_export_argument
from model.export_process import child_environment
from model.manifest import MANIFEST_FORMAT, current_export, set_current_export, write_manifest


def test_the_export_process_environment_is_built_from_an_allowlist() -> None:
    bot = {
        "DISCORD_TOKEN": "discord-secret",
        "SLACK_BOT_TOKEN": "xoxb-secret",
        "BOT_SLACK_SIGNING_SECRET": "signing",
        "HF_TOKEN": "from-the-environment",
        "DATABASE_URL": "postgres://secret",
        "HF_HOME": "/tmp/hf",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_CACHE": "/tmp/t",
        "LC_ALL": "C.UTF-8",
        "https_proxy": "http://proxy:3128",
        "PATH": "/usr/bin",
    }
    environment = child_environment(SecretStr("hf_from_settings"), bot)
    assert {name: environment[name] for name in bot if name in environment} == {
        "HF_TOKEN": "hf_from_settings",  # the settings' token, not whatever the environment held
        "HF_HOME": "/tmp/hf",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_CACHE": "/tmp/t",
        "LC_ALL": "C.UTF-8",
        "https_proxy": "http://proxy:3128",
        "PATH": "/usr/bin",
    }
    assert "HF_TOKEN" not in child_environment(None, bot)


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
