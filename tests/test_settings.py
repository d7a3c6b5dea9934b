"""Settings: defaults, parsing, and errors that name the variable but never the secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.settings import SettingsError, load_settings
from entry.cli import EXIT_BAD_SETTINGS, app

SECRET = "xoxb-very-secret-token-value"


def test_defaults_follow_the_reference_notebook(tmp_path: Path) -> None:
    settings = load_settings()
    properties = settings.runtime_properties()
    assert properties["PERFORMANCE_HINT"] == "LATENCY"
    assert properties["NUM_STREAMS"] == "1"
    assert properties["CACHE_DIR"] == str(tmp_path / "data" / "ov-cache")
    assert settings.device == "CPU" and settings.model_path is None


def test_environment_and_dotenv_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BOT_MAX_NEW_TOKENS=77\nDISCORD_ADMIN_IDS=1, 2,3\n")
    monkeypatch.setenv("BOT_DEVICE", "gpu")
    monkeypatch.setenv("BOT_OV_PROPERTIES", '{"performance_hint": "THROUGHPUT"}')
    settings = load_settings()
    assert settings.max_new_tokens == 77
    assert settings.discord_admin_ids == ["1", "2", "3"]
    assert settings.device == "GPU"
    assert settings.runtime_properties()["PERFORMANCE_HINT"] == "THROUGHPUT"


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("BOT_TEMPERATURE", "hot", "valid number"),
        ("BOT_DEVICE", "TPU", "'CPU', 'GPU', 'NPU' or 'AUTO'"),
        ("BOT_MAX_NEW_TOKENS", "0", "greater than or equal to 1"),
        ("SLACK_MODE", "carrier-pigeon", "'socket' or 'http'"),
        ("BOT_OV_PROPERTIES", "not json", "JSON"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, why: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert variable in str(error.value) and why in str(error.value)


def test_context_must_leave_room_for_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_CONTEXT_SIZE", "256")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "BOT_CONTEXT_SIZE (256) must be larger than BOT_MAX_NEW_TOKENS (512)" in str(error.value)


def test_cli_exits_2_on_bad_settings_without_printing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", SECRET)
    monkeypatch.setenv("BOT_TEMPERATURE", SECRET)  # a secret pasted into the wrong variable
    monkeypatch.setenv("BOT_LOG_LEVEL", "LOUD")
    result = CliRunner().invoke(app, ["ask", "hello"])
    assert result.exit_code == EXIT_BAD_SETTINGS
    assert "BOT_TEMPERATURE" in result.output and "BOT_LOG_LEVEL" in result.output
    assert SECRET not in result.output


def test_secrets_are_masked_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", SECRET)
    settings = load_settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.discord_token is not None and settings.discord_token.get_secret_value() == SECRET
