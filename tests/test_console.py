"""The console commands, run as a user runs them: `bot ask`, `bot chat`, model errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.commands import FAILED

TIMEOUT = 120


def bot_env(model: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DISCORD_", "SLACK_"))}
    env.update({"BOT_MODEL_PATH": str(model), "BOT_DATA_DIR": str(tmp_path / "data"), "BOT_MAX_NEW_TOKENS": "48"})
    env.update(extra)
    return env


def run_bot(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "entry", *args]
    return subprocess.run(command, env=env, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)


def test_ask_answers_the_capital_of_france(bundled_model: Path, tmp_path: Path) -> None:
    result = run_bot(["ask", "What is the capital of France?"], bot_env(bundled_model, tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_chat_commands_and_history(bundled_model: Path, tmp_path: Path) -> None:
    script = "/help\nHello there!\n/stats\n/reset\n/quit\n"
    result = run_bot(["chat"], bot_env(bundled_model, tmp_path), stdin=script)
    assert result.returncode == 0, result.stderr
    assert "/reset  forget this conversation" in result.stdout
    assert "tokens/s" in result.stdout and "SmolLM2" in result.stdout
    assert "Conversation forgotten (2 messages)." in result.stdout


def test_chat_streams_tokens_one_after_another(bundled_model: Path, tmp_path: Path) -> None:
    env = bot_env(bundled_model, tmp_path, BOT_MAX_NEW_TOKENS="80")
    process = subprocess.Popen(
        [sys.executable, "-m", "entry", "chat"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    arrivals: list[tuple[float, bytes]] = []
    reader = threading.Thread(target=_read_all, args=(process.stdout.fileno(), arrivals), daemon=True)
    reader.start()
    process.stdin.write(b"Tell me a story about a cat.\n/quit\n")
    process.stdin.flush()
    assert process.wait(timeout=TIMEOUT) == 0
    reader.join(timeout=10)
    output = b"".join(data for _, data in arrivals)
    start = next(i for i, (_, data) in enumerate(arrivals) if b"bot> " in data)
    end = next(i for i in range(start, len(arrivals)) if b"\n" in arrivals[i][1])
    reply_reads = arrivals[start : end + 1]
    assert len(reply_reads) >= 5, output
    assert reply_reads[-1][0] - reply_reads[0][0] > 0.05  # spread over time, not one write


def _read_all(fd: int, arrivals: list[tuple[float, bytes]]) -> None:
    while data := os.read(fd, 4096):
        arrivals.append((time.monotonic(), data))


def test_device_error_names_the_cause_not_a_source_file(bundled_model: Path, tmp_path: Path) -> None:
    result = run_bot(["ask", "hi"], bot_env(bundled_model, tmp_path, BOT_DEVICE="NPU"))
    assert result.returncode == 1
    assert "on NPU:" in result.stderr and "Exception from src" not in result.stderr
    message = result.stderr.split("on NPU:", 1)[1].strip()
    assert len(message) > 10, result.stderr


def test_first_run_keeps_stdout_for_the_answer(tmp_path: Path) -> None:
    env = bot_env(Path("unused"), tmp_path)
    del env["BOT_MODEL_PATH"]  # the bundled model, fetched into a fresh data directory
    result = run_bot(["ask", "What is the capital of France?"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        line for line in result.stdout.strip().splitlines() if "Paris" in line
    ]
    assert "Saved" in result.stderr or "Downloading" in result.stderr or "Collecting" in result.stderr


def test_damaged_cached_model_is_fetched_again(bundled_model: Path, tmp_path: Path) -> None:
    cached = tmp_path / "data" / "models" / "bundled" / bundled_model.name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(bundled_model.read_bytes()[: 1 << 20])
    env = bot_env(Path("unused"), tmp_path)
    del env["BOT_MODEL_PATH"]
    result = run_bot(["ask", "What is the capital of France?"], env)
    assert result.returncode == 0, result.stderr
    assert "damaged" in result.stderr and "Paris" in result.stdout


def test_missing_model_is_reported_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    result = run_bot(["ask", "hi"], bot_env(missing, tmp_path))
    assert result.returncode == 1
    assert str(missing) in result.stderr and "does not exist" in result.stderr


def test_incomplete_model_directory_lists_missing_files(tmp_path: Path) -> None:
    model_dir = tmp_path / "half-exported"
    model_dir.mkdir()
    (model_dir / "openvino_model.xml").write_text("<net/>")
    result = run_bot(["ask", "hi"], bot_env(model_dir, tmp_path))
    assert result.returncode == 1
    assert "openvino_model.bin" in result.stderr and "openvino_tokenizer.xml" in result.stderr


@pytest.mark.parametrize("size", [0, 4096])
def test_corrupt_gguf_is_reported(bundled_model: Path, tmp_path: Path, size: int) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(bundled_model.read_bytes()[:size])
    result = run_bot(["ask", "hi"], bot_env(broken, tmp_path))
    assert result.returncode == 1
    assert str(broken) in result.stderr and "Traceback" not in result.stderr


def test_console_export_is_wired_to_the_admin_actions(bundled_model: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-checkpoint-here"
    script = f"/export help\n/export {missing}\nWhat is the capital of France?\n/quit\n"
    result = run_bot(["chat"], bot_env(bundled_model, tmp_path), stdin=script)
    assert result.returncode == 0, result.stderr
    assert "Usage: /export [SOURCE]" in result.stdout
    assert str(missing) in result.stdout  # the failed export says which source was missing
    assert "Paris" in result.stdout  # and the old model keeps answering


def test_prompt_that_cannot_fit_is_explained_and_the_chat_goes_on(bundled_model: Path, tmp_path: Path) -> None:
    env = bot_env(bundled_model, tmp_path, BOT_CONTEXT_SIZE="256", BOT_SYSTEM_PROMPT="Be helpful. " * 100)
    result = run_bot(["chat"], env, stdin="Hello\n/stats\n/quit\n")
    assert result.returncode == 0, result.stderr
    assert f"{FAILED} (The prompt needs" in result.stdout and "BOT_CONTEXT_SIZE" in result.stdout
    assert "No reply in this conversation yet." in result.stdout
    asked = run_bot(["ask", "Hello"], env)
    assert asked.returncode == 1
    assert "The prompt needs" in asked.stderr and "Traceback" not in asked.stderr


def test_a_history_database_that_cannot_be_opened_is_one_clear_line(bundled_model: Path, tmp_path: Path) -> None:
    (tmp_path / "data" / "history.sqlite3").mkdir(parents=True)  # a directory where the database file belongs
    result = run_bot(["chat"], bot_env(bundled_model, tmp_path), stdin="/quit\n")
    assert result.returncode == 1
    assert "Cannot open the history database" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("engine", ["batching", "pipeline"])
def test_ask_answers_on_either_engine(bundled_model: Path, tmp_path: Path, engine: str) -> None:
    env = bot_env(bundled_model, tmp_path, BOT_ENGINE=engine)
    result = run_bot(["ask", "What is the capital of France?"], env)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert ("batching" in result.stderr) == (engine == "batching")  # the loader says which engine it loads
