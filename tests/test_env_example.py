"""`.env.example` documents every setting, and its values are valid."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.settings import Settings, env_name, load_settings

REPO = Path(__file__).resolve().parent.parent


def _documented_keys() -> set[str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    return {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}


def test_every_setting_is_documented() -> None:
    assert {env_name(field) for field in Settings.model_fields} == _documented_keys()


def test_example_values_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(REPO / ".env.example", tmp_path / ".env")
    monkeypatch.delenv("BOT_DATA_DIR")
    settings = load_settings()
    assert settings.data_dir.is_absolute() and settings.data_dir.name == "openvino-team-bot"
    assert settings.max_new_tokens == 512 and settings.slack_mode == "socket"
    assert settings.discord_token is None and settings.model_path is None
