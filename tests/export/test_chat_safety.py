"""What chat may not ask of /export, and what the converter child can see."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import psutil
import pytest
from pydantic import SecretStr

from bot.export_service import ExportService
from model.export import ExportTarget
from model.export_options import ExportRequestError, chat_export_request
from model.manifest import exports_dir
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from model.switcher import ModelSwitcher
from tests.export.conftest import RUNTIME, SharedEngine, requires_export_extra
from tests.export.converters import HUB_ID, SPY, converter, offline_hub

ALLOWED = [HUB_ID, "microsoft/Phi-3-mini-4k-instruct"]


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("/srv/models/phi3", "Local paths cannot be exported from chat (/srv/models/phi3)."),
        ("./checkpoint", "Local paths cannot be exported from chat (./checkpoint)."),
        ("--model ~/phi3", "Local paths cannot be exported from chat (~/phi3)."),
        ("acme/../../etc", "Local paths cannot be exported from chat (acme/../../etc)."),
        ("evil/model --trust-remote-code", "evil/model is not allowed from chat."),
        (f"{HUB_ID} --cache-dir /", "--cache-dir cannot be set from chat"),
        (f"{HUB_ID} --cache_dir=/root", "--cache-dir cannot be set from chat"),
        ("--quantization-statistics-path /tmp/x", "--quantization-statistics-path cannot be set from chat"),
        ("""--model-kwargs '{"cache_dir": "/"}'""", "--model-kwargs cannot set cache_dir from chat"),
    ],
)
def test_chat_refuses_paths_and_sources_outside_the_allowlist(argument: str, expected: str) -> None:
    with pytest.raises(ExportRequestError) as caught:
        chat_export_request(argument, ALLOWED)
    assert str(caught.value).startswith(expected), str(caught.value)


def test_refusals_name_what_is_allowed_and_where_the_rest_goes() -> None:
    with pytest.raises(ExportRequestError) as caught:
        chat_export_request("other/model", ALLOWED)
    assert f"Sources allowed from chat: {HUB_ID}, microsoft/Phi-3-mini-4k-instruct." in str(caught.value)
    assert "`bot export`" in str(caught.value)


def test_chat_takes_allowlisted_hub_ids_with_remote_code_and_never_as_a_local_path() -> None:
    default = chat_export_request("", ALLOWED)
    assert default.source == HUB_ID and not default.local_allowed
    request = chat_export_request("MICROSOFT/phi-3-mini-4k-instruct --trust-remote-code --group-size 64", ALLOWED)
    assert request.source == "microsoft/Phi-3-mini-4k-instruct"
    assert request.options.trust_remote_code and request.options.group_size == 64
    with pytest.raises(ExportRequestError, match="turned off"):
        chat_export_request("", [])


@requires_export_extra
async def test_refused_chat_exports_start_nothing(
    engine: OpenVINOEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = ExportTarget(tmp_path / "models", "CPU", RUNTIME)
    service = ExportService(ModelSwitcher(EngineSlot(SharedEngine(engine)), "CPU", RUNTIME), target)
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()

    async def progress(line: str) -> None:
        raise AssertionError(f"nothing should start, got {line!r}")

    caplog.set_level(logging.INFO, logger="bot.audit")
    answers = {
        argument: await service.export("admin", argument, progress)
        for argument in (
            str(checkpoint),
            "--cache-dir /",
            "--quantization-statistics-path /tmp/x",
            "someone/else",
        )
    }
    assert answers[str(checkpoint)].startswith(f"Local paths cannot be exported from chat ({checkpoint})")
    assert answers["--cache-dir /"].startswith("--cache-dir cannot be set from chat")
    assert answers["--quantization-statistics-path /tmp/x"].startswith("--quantization-statistics-path cannot be")
    assert answers["someone/else"].startswith("someone/else is not allowed from chat.")
    for source in (str(checkpoint), "someone/else"):
        assert "Sources allowed from chat: microsoft/Phi-3-mini-4k-instruct." in answers[source]
    assert not exports_dir(tmp_path / "models").exists() and psutil.Process().children() == []
    refused = [r.getMessage() for r in caplog.records if r.name == "bot.audit" and " refused at " in r.getMessage()]
    assert len(refused) == 4, refused


@requires_export_extra
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
async def test_the_converter_sees_no_bot_secret_and_not_the_bots_directory(
    engine: OpenVINOEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "DISCORD_TOKEN": "discord-secret",
        "SLACK_BOT_TOKEN": "xoxb-secret",
        "BOT_OPENAI_KEY": "bot-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "HF_HOME": str(tmp_path / "hf-home"),
        "LC_ALL": "C.UTF-8",
    }.items():
        monkeypatch.setenv(name, value)
    hub_id = offline_hub(tmp_path, monkeypatch)
    report = tmp_path / "report.json"
    target = ExportTarget(
        tmp_path / "models",
        "CPU",
        RUNTIME,
        hf_token=SecretStr("hf_test_token"),
        converter=converter(tmp_path, "spy", SPY, str(report), str(os.getpid())),
    )
    service = ExportService(
        ModelSwitcher(EngineSlot(SharedEngine(engine)), "CPU", RUNTIME), target, allowed_sources=[hub_id]
    )

    async def progress(line: str) -> None:
        pass

    answer = await service.export("admin", "", progress)

    assert answer.startswith("Export failed: optimum-cli failed (exit status 3)"), answer
    seen = json.loads(report.read_text())
    environment = seen["environment"]
    assert not [name for name in environment if name.startswith(("DISCORD_", "SLACK_", "BOT_"))], environment
    assert "AWS_SECRET_ACCESS_KEY" not in environment, "only allowlisted variables pass"
    assert environment["HF_HOME"] == str(tmp_path / "hf-home") and environment["LC_ALL"] == "C.UTF-8"
    assert environment["HF_TOKEN"] == "hf_test_token"
    scratch = Path(seen["cwd"])
    assert scratch != tmp_path and tmp_path == Path(os.getcwd()), "not the bot's working directory"
    assert scratch.name.startswith("bot-export-"), scratch
    assert not await asyncio.to_thread(scratch.exists), "a scratch directory, removed after"
    assert set(seen["read"].values()) == {"refused: PermissionError"}, "neither its parent's nor the bot's environ"
    assert list(exports_dir(tmp_path / "models").iterdir()) == []
