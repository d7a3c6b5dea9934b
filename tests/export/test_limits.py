"""A hung converter: the time limit, `/export cancel`, and the bot killed with kill -9 while it converts."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import psutil
import pytest

from bot.export_service import ExportService
from bot.metrics import Metrics
from model.export import ExportTarget
from model.export_cleanup import clean_exports
from model.manifest import exports_dir
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from model.switcher import ModelSwitcher
from tests.export.conftest import RUNTIME, SharedEngine, requires_export_extra
from tests.export.converters import HANG, converter, local_checkpoint, offline_hub, pids_of, wait_gone

pytestmark = [
    requires_export_extra,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and death signals: Linux"),
]


class Progress:
    """Records progress lines; ``converting`` is set once the hung converter has said its pids."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.converting = asyncio.Event()

    async def __call__(self, line: str) -> None:
        self.lines.append(line)
        if "converting" in line:
            self.converting.set()

    def pids(self) -> list[int]:
        return pids_of(next(line for line in self.lines if "converting" in line))


def hung_service(
    engine: OpenVINOEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    time_limit_s: float | None,
    metrics: Metrics | None = None,
) -> ExportService:
    """The chat export service for an allowlisted hub id (cached offline), converting with ``HANG``."""
    hub_id = offline_hub(tmp_path, monkeypatch)
    target = ExportTarget(
        tmp_path / "models", "CPU", RUNTIME, time_limit_s=time_limit_s, converter=converter(tmp_path, "hang", HANG)
    )
    switcher = ModelSwitcher(EngineSlot(SharedEngine(engine)), "CPU", RUNTIME)
    return ExportService(switcher, target, allowed_sources=[hub_id], progress_interval=0, metrics=metrics)


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "bot.audit"]


async def test_a_hung_export_is_stopped_at_its_time_limit(
    engine: OpenVINOEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.audit")
    metrics = Metrics()
    service = hung_service(engine, tmp_path, monkeypatch, time_limit_s=5, metrics=metrics)
    progress = Progress()

    answer = await asyncio.wait_for(service.export("admin-1", "", progress), timeout=120)

    assert metrics.registry.get_sample_value("bot_exports_total", {"outcome": "timed_out"}) == 1

    assert answer.startswith("Export timed out: The export ran past its time limit of 5 s and was stopped"), answer
    assert "keeps answering" in answer
    assert wait_gone(progress.pids()) == [], "the converter and what it started were killed"
    assert list(exports_dir(tmp_path / "models").iterdir()) == [], "its folder was removed"
    assert any(m.startswith("export by admin-1 timed out at ") for m in audit_lines(caplog)), audit_lines(caplog)


async def test_export_cancel_stops_the_running_export(
    engine: OpenVINOEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.audit")
    service = hung_service(engine, tmp_path, monkeypatch, time_limit_s=None)
    progress = Progress()
    running = asyncio.create_task(service.export("admin-1", "", progress))
    await asyncio.wait_for(progress.converting.wait(), timeout=60)
    assert len(list(exports_dir(tmp_path / "models").iterdir())) == 1

    cancelled = await asyncio.wait_for(service.export("admin-2", "cancel", Progress()), timeout=60)
    answer = await asyncio.wait_for(running, timeout=60)

    assert cancelled.startswith("Cancelled the export requested by admin-1 at "), cancelled
    assert answer.startswith("Export cancelled by admin-2."), answer
    assert wait_gone(progress.pids()) == []
    assert list(exports_dir(tmp_path / "models").iterdir()) == []
    assert await service.export("admin-2", " CANCEL ", Progress()) == "No export is running."
    audit = audit_lines(caplog)
    assert any(m.startswith("export by admin-1 cancelled by admin-2 at ") for m in audit), audit
    assert any(m.startswith("export cancel by admin-2 at ") and "no export was running" in m for m in audit), audit


# A bot that starts an export with a hung converter and prints the converter's output.
_BOT = """
import asyncio, sys
from pathlib import Path
from model.export import ExportTarget, export_model
from model.export_options import REFERENCE_OPTIONS, ExportRequest

async def show(event):
    if event.line:
        print(event.line, flush=True)

target = ExportTarget(Path(sys.argv[1]), converter=tuple(sys.argv[3:]))
asyncio.run(export_model(ExportRequest(sys.argv[2], REFERENCE_OPTIONS), target, show))
"""


async def test_a_bot_killed_during_an_export_leaves_no_converter_and_no_folder(tmp_path: Path) -> None:
    models = tmp_path / "models"
    argv = converter(tmp_path, "hang", HANG)
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _BOT, str(models), str(local_checkpoint(tmp_path)), *argv, stdout=asyncio.subprocess.PIPE
    )
    assert bot.stdout is not None
    line = (await asyncio.wait_for(bot.stdout.readline(), timeout=60)).decode()
    descendants = [child.pid for child in psutil.Process(bot.pid).children(recursive=True)]
    assert set(pids_of(line)) <= set(descendants), (line, descendants)
    assert len(list(exports_dir(models).iterdir())) == 1, "the export folder is being written"

    bot.kill()
    await bot.wait()

    assert wait_gone(descendants) == [], "no orphan: the converter died with the bot"
    assert [path.name for path in clean_exports(models, keep=3)] != []
    assert list(exports_dir(models).iterdir()) == [], "the next start removed the unfinished folder"
