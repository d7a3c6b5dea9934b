"""`bot history list|export|prune` through the real command line against a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.settings import load_settings
from bot.store import SQLiteHistoryStore
from bot.types import ConversationKey
from entry.cli import app
from model.engine import ChatMessage

CHANNEL = ConversationKey("discord", "111")
THREAD = ConversationKey("slack", "C42", "1700000000.000100")
START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
DAY = 86400.0


def fill_history(path: Path) -> None:
    """Two conversations written through the store, the oldest turns ten days before the newest."""

    async def fill() -> None:
        now = START
        store = await SQLiteHistoryStore.open(path, clock=lambda: now)
        try:
            for text in ("one", "two", "three"):
                await store.append(CHANNEL, ChatMessage("user", text))
            now += 10 * DAY
            await store.append(THREAD, ChatMessage("user", "Tell me a story, «please» 🐉"))
            await store.append(THREAD, ChatMessage("assistant", "Once upon a"), interrupted=True)
        finally:
            await store.close()

    asyncio.run(fill())


def stored_contents(path: Path) -> list[str]:
    async def read() -> list[str]:
        store = await SQLiteHistoryStore.open(path, prune=False)
        try:
            return [message.content for key in (CHANNEL, THREAD) for message in await store.history(key, 100)]
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def history_db() -> Path:
    """The history file the settings point at (BOT_DATA_DIR is this test's tmp_path/data), filled."""
    path = load_settings().history_db
    fill_history(path)
    return path


def test_list_shows_each_conversation_with_its_turns_and_last_activity(history_db: Path) -> None:
    result = CliRunner().invoke(app, ["history", "list"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "slack:C42/1700000000.000100\t2 turns\tlast 2023-11-24T22:13:20Z",
        "discord:111\t3 turns\tlast 2023-11-14T22:13:20Z",
    ]


def test_export_prints_one_json_line_per_turn(history_db: Path) -> None:
    result = CliRunner().invoke(app, ["history", "export", str(THREAD)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {
            "role": "user",
            "content": "Tell me a story, «please» 🐉",
            "created_at": "2023-11-24T22:13:20Z",
            "interrupted": False,
        },
        {"role": "assistant", "content": "Once upon a", "created_at": "2023-11-24T22:13:20Z", "interrupted": True},
    ]


def test_export_to_a_file_leaves_nothing_else_beside_it(history_db: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "discord.jsonl"
    target.parent.mkdir()
    result = CliRunner().invoke(app, ["history", "export", "discord:111", "--output", str(target)])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["content"] for line in target.read_text(encoding="utf-8").splitlines()] == [
        "one",
        "two",
        "three",
    ]
    assert list(target.parent.iterdir()) == [target]


def test_export_into_a_missing_folder_says_why(history_db: Path, tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "out.jsonl"
    result = CliRunner().invoke(app, ["history", "export", "discord:111", "--output", str(target)])
    assert result.exit_code == 1
    assert f"Cannot write {target}" in result.output


def test_an_unknown_conversation_exits_1_with_a_message(history_db: Path) -> None:
    result = CliRunner().invoke(app, ["history", "export", "discord:999"])
    assert result.exit_code == 1
    assert "No conversation discord:999" in result.output and "bot history list" in result.output


def test_without_a_database_nothing_is_found_and_none_is_created() -> None:
    path = load_settings().history_db
    result = CliRunner().invoke(app, ["history", "export", "discord:111"])
    assert result.exit_code == 1 and "No conversation discord:111" in result.output
    assert CliRunner().invoke(app, ["history", "list"]).output == "No conversations stored.\n"
    assert CliRunner().invoke(app, ["history", "prune"]).output == "Removed 0 turns.\n"
    assert not path.exists()


@pytest.mark.parametrize("text", ["discord", ":111", "discord:", "slack:C42/"])
def test_a_malformed_conversation_is_bad_input(history_db: Path, text: str) -> None:
    result = CliRunner().invoke(app, ["history", "export", text])
    assert result.exit_code == 2
    assert "platform:channel or platform:channel/thread" in result.output


def test_prune_applies_the_settings_now_and_dry_run_only_counts(
    history_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOT_HISTORY_MAX_TURNS", "2")
    monkeypatch.setenv("BOT_HISTORY_MAX_AGE_DAYS", "")  # the stored turns are years old: only the turn limit
    dry = CliRunner().invoke(app, ["history", "prune", "--dry-run"])
    assert (dry.exit_code, dry.output) == (0, "Would remove 1 turn.\n")
    assert stored_contents(history_db) == ["one", "two", "three", "Tell me a story, «please» 🐉", "Once upon a"]

    result = CliRunner().invoke(app, ["history", "prune"])
    assert (result.exit_code, result.output) == (0, "Removed 1 turn.\n")
    assert stored_contents(history_db) == ["two", "three", "Tell me a story, «please» 🐉", "Once upon a"]


def test_prune_by_age_removes_every_turn_older_than_the_setting(
    history_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOT_HISTORY_MAX_AGE_DAYS", "30")  # the fixture's turns are from November 2023
    result = CliRunner().invoke(app, ["history", "prune"])
    assert (result.exit_code, result.output) == (0, "Removed 5 turns.\n")
    assert stored_contents(history_db) == []


def test_the_installed_command_exports_without_loading_a_model(history_db: Path, tmp_path: Path) -> None:
    environment = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data"), "BOT_MODEL_PATH": str(tmp_path / "absent")}
    completed = subprocess.run(
        [sys.executable, "-m", "entry", "history", "export", "discord:111"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert [json.loads(line)["content"] for line in completed.stdout.splitlines()] == ["one", "two", "three"]
