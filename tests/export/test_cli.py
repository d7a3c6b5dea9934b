"""`bot export`: missing extra, refused parameters, and a running bot switching to its export."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bot.reply import Reply
from bot.settings import Settings
from bot.types import ConversationKey
from entry.compose import export_service
from entry.export_cli import export, place_for_ovms
from model.export import ExportResult
from model.loader import load_engine
from model.manifest import current_export, manifest_problem, read_manifest
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from model.switcher import ModelSwitcher, follow_current_export
from tests.export.conftest import RUNTIME, SharedEngine, manager_on, requires_export_extra

# `bot export` as the lead registers it: the same typer function as a command.
_APP = typer.Typer()
_APP.command()(export)
_RUN_EXPORT = "import typer; from entry.export_cli import export; typer.run(export)"


def test_without_the_export_extra_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules is how Python marks a module as unavailable.
    monkeypatch.setitem(sys.modules, "nncf", None)
    result = CliRunner().invoke(_APP, ["--model", "/anything"])
    assert result.exit_code == 1
    assert re.search(r"needs the export extra \(missing: [^)]*\bnncf\b", result.output)
    assert "pip install -e '.[export]'" in result.output


def test_bad_parameters_exit_with_the_reason() -> None:
    result = CliRunner().invoke(_APP, ["--ratio", "2"])
    assert result.exit_code == 2
    assert "--ratio: Input should be less than or equal to 1" in result.output


@requires_export_extra
def test_impossible_group_size_exits_before_exporting(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(_APP, ["--model", str(tiny_checkpoint), "--group-size", "48"])
    assert result.exit_code == 1
    assert "Export failed: Group size 48 does not divide the model's hidden size 128" in result.output
    assert "Group sizes that would work: 32, 64, 128, -1 (per column)" in result.output
    assert not (tmp_path / "data" / "models" / "exports").exists()


@requires_export_extra
async def test_running_bot_switches_to_a_cli_export_without_dropping_replies(
    engine: OpenVINOEngine, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    models_dir = tmp_path / "data" / "models"
    old = SharedEngine(engine)
    slot = EngineSlot(old)
    manager = manager_on(slot, max_new_tokens=8)
    stop = asyncio.Event()
    watcher = asyncio.create_task(follow_current_export(ModelSwitcher(slot, "CPU", RUNTIME), models_dir, stop, 0.2))
    replies: list[Reply] = []

    async def chat() -> None:
        for number in range(1000):
            reply = manager.reply(ConversationKey("cli", "general"), f"Message {number}")
            await reply.complete()
            replies.append(reply)
            if slot.current is not old or stop.is_set():
                return
            await asyncio.sleep(0.3)

    chatting = asyncio.create_task(chat())
    environment = {**os.environ, "BOT_DATA_DIR": str(tmp_path / "data")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RUN_EXPORT, "--model", str(tiny_checkpoint), env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=240)
    assert process.returncode == 0, stderr.decode()[-2000:]
    exported = current_export(models_dir)
    assert exported is not None and read_manifest(exported) is not None
    assert "Exported and validated in " in stdout.decode()
    assert "Switching the current model" in stderr.decode()  # the progress bar went through every stage

    await asyncio.wait_for(chatting, timeout=60)  # ends with the first reply after the switch
    stop.set()
    await watcher
    assert slot.current.info.path == exported and old.released
    assert all(reply.stats is not None for reply in replies), "no reply was dropped"
    assert replies[0].stats is not None and replies[0].stats.model_name == engine.info.name
    after = manager.reply(ConversationKey("cli", "general"), "Who answers now?")
    await after.complete()
    assert after.stats is not None and after.stats.model_name == exported.name
    await slot.aclose()


async def test_admin_export_without_the_extra_says_what_to_install(
    engine: OpenVINOEngine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    old = SharedEngine(engine)
    service = export_service(EngineSlot(old), Settings(data_dir=tmp_path / "data"))
    lines: list[str] = []

    async def progress(line: str) -> None:
        lines.append(line)

    answer = await service.export("admin", "", progress)
    assert re.match(
        r"Export failed: Model export needs the `export` extra, which is not installed \(missing: [^)]*torch", answer
    )
    assert "pip install -e '.[export]'" in answer
    assert f"The current model ({engine.info.name}) keeps answering." in answer
    assert not old.released


# --- `bot export --for-ovms DIR` ---------------------------------------------------------------------------


async def test_export_is_placed_where_ovms_reads_it_beside_other_models(exported: ExportResult, tmp_path: Path) -> None:
    repository = tmp_path / "ovms"
    repository.mkdir()
    other = {"name": "other", "base_path": "other"}
    (repository / "config.json").write_text(json.dumps({"mediapipe_config_list": [other]}), encoding="utf-8")
    for _ in range(2):  # placing it again replaces the earlier copy
        target = place_for_ovms(exported.path, repository, "Phi-3-mini-4k-instruct", "CPU")
    assert target == repository / "Phi-3-mini-4k-instruct"
    config = json.loads((repository / "config.json").read_text(encoding="utf-8"))
    assert (repository / "config.json").stat().st_mode & 0o044 == 0o044  # OVMS's own user reads it
    assert config["mediapipe_config_list"] == [other, {"name": target.name, "base_path": target.name}]
    assert "enable_prefix_caching: true" in (target / "graph.pbtxt").read_text(encoding="utf-8")
    assert sorted(p.name for p in repository.iterdir()) == ["Phi-3-mini-4k-instruct", "config.json"]
    assert manifest_problem(target) is None  # every exported file is there, unchanged
    engine = load_engine(target, "CPU", RUNTIME)  # the bot loads its tokenizer from the same directory
    assert await engine.count_tokens("Hello") > 0
    await engine.aclose()


def test_for_ovms_refuses_a_broken_config_before_exporting(tmp_path: Path) -> None:
    repository = tmp_path / "ovms"
    repository.mkdir()
    (repository / "config.json").write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(_APP, ["--model", str(tmp_path / "checkpoint"), "--for-ovms", str(repository)])
    assert result.exit_code == 2
    assert f"--for-ovms: {repository / 'config.json'} is not a readable JSON file" in result.output
    assert (repository / "config.json").read_text(encoding="utf-8") == "{not json"  # left as it was
    assert not (tmp_path / "data").exists()
