"""Failing exports leave the current model serving and say why."""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import pytest

from bot.export_service import ExportService
from bot.types import ConversationKey
from model.export import ExportBusyError, ExportResult, ExportTarget, ProgressEvent, export_model
from model.export_checks import ExportError
from model.export_options import REFERENCE_OPTIONS, ExportOptions, ExportRequest
from model.manifest import CURRENT_NAME, exports_dir
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from model.switcher import ModelSwitcher
from tests.export.conftest import RUNTIME, SharedEngine, manager_on, requires_export_extra
from tests.export.converters import offline_hub

pytestmark = requires_export_extra


def _snapshot(models_dir: Path) -> tuple[bytes, list[str]]:
    """What a failed export must not change: the pointer and the set of exports."""
    return (models_dir / CURRENT_NAME).read_bytes(), sorted(p.name for p in exports_dir(models_dir).iterdir())


async def _export(source: str, options: ExportOptions, models_dir: Path) -> list[ProgressEvent]:
    events: list[ProgressEvent] = []

    async def record(event: ProgressEvent) -> None:
        events.append(event)

    await export_model(ExportRequest(source, options), ExportTarget(models_dir, "CPU", RUNTIME), record)
    return events


async def test_missing_source_fails_before_anything_is_written(
    exported: ExportResult, session_models_dir: Path, tmp_path: Path
) -> None:
    before = _snapshot(session_models_dir)
    with pytest.raises(ExportError, match=r"checkpoint directory .*nowhere does not exist"):
        await _export(str(tmp_path / "nowhere"), REFERENCE_OPTIONS, session_models_dir)
    assert _snapshot(session_models_dir) == before


async def test_impossible_group_size_is_refused_with_sizes_that_work(
    exported: ExportResult, session_models_dir: Path, tiny_checkpoint: Path
) -> None:
    before = _snapshot(session_models_dir)
    started = time.monotonic()
    with pytest.raises(ExportError) as caught:
        await _export(str(tiny_checkpoint), ExportOptions(group_size=96), session_models_dir)
    assert "Group size 96 does not divide the model's hidden size 128, intermediate size 256" in str(caught.value)
    assert "Group sizes that would work: 32, 64, 128, -1 (per column)" in str(caught.value)
    assert time.monotonic() - started < 5, "refused before starting the conversion"
    assert _snapshot(session_models_dir) == before


async def test_failed_conversion_removes_its_directory(
    exported: ExportResult, session_models_dir: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "no-weights"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_checkpoint / name, broken / name)
    before = _snapshot(session_models_dir)
    with pytest.raises(ExportError, match=r"optimum-cli failed \(exit status 1\): \S*Error"):
        await _export(str(broken), REFERENCE_OPTIONS, session_models_dir)
    assert _snapshot(session_models_dir) == before


async def test_hub_id_without_network_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    # The hub reads HF_HUB_OFFLINE once at import; this is the same switch, set for this test.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ExportError, match="no network connection and no cached copy"):
        await _export("acme/not-cached-anywhere", REFERENCE_OPTIONS, tmp_path / "models")
    assert not exports_dir(tmp_path / "models").exists()


async def test_failing_admin_export_keeps_the_old_model_answering(
    engine: OpenVINOEngine,
    exported: ExportResult,
    session_models_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cached = offline_hub(tmp_path, monkeypatch)  # a config only: enough for the checks before converting
    old = SharedEngine(engine)
    slot = EngineSlot(old)
    manager = manager_on(slot)
    target = ExportTarget(session_models_dir, "CPU", RUNTIME)
    service = ExportService(ModelSwitcher(slot, "CPU", RUNTIME), target, allowed_sources=[cached, "acme/not-cached"])
    before = _snapshot(session_models_dir)
    lines: list[str] = []

    async def progress(line: str) -> None:
        lines.append(line)

    missing = await service.export("admin", "acme/not-cached", progress)
    impossible = await service.export("admin", f"{cached} --group-size 256", progress)

    assert missing.startswith("Export failed: Could not reach the Hugging Face Hub for acme/not-cached"), missing
    assert "Group size 256 does not divide the model's hidden size 128" in impossible
    for message in (missing, impossible):
        assert f"The current model ({engine.info.name}) keeps answering." in message
    assert lines == ["[1/5] Checking the request…"] * 2
    assert slot.current is old and not old.released
    assert _snapshot(session_models_dir) == before
    reply = manager.reply(ConversationKey("test", "after-failure"), "Hello")
    await reply.complete()
    assert reply.stats is not None and reply.stats.model_name == engine.info.name


async def test_cancelled_export_stops_the_conversion_and_removes_its_directory(
    exported: ExportResult, session_models_dir: Path, tiny_checkpoint: Path
) -> None:
    import psutil

    converting = asyncio.Event()

    async def watch(event: ProgressEvent) -> None:
        if event.line is not None:  # optimum-cli is running and talking
            converting.set()

    before = _snapshot(session_models_dir)
    request = ExportRequest(str(tiny_checkpoint), REFERENCE_OPTIONS)
    task = asyncio.create_task(export_model(request, ExportTarget(session_models_dir, "CPU", RUNTIME), watch))
    await asyncio.wait_for(converting.wait(), timeout=60)
    children = psutil.Process().children(recursive=True)
    assert any("optimum_cli" in " ".join(child.cmdline()) for child in children)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "the conversion process was stopped"
    assert _snapshot(session_models_dir) == before


async def test_an_export_from_another_process_holds_the_models_directory(
    session_models_dir: Path, tiny_checkpoint: Path, exported: ExportResult
) -> None:
    before = _snapshot(session_models_dir)
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLD_LOCK, str(session_models_dir), stdout=asyncio.subprocess.PIPE
    )
    assert holder.stdout is not None
    assert await holder.stdout.readline() == b"locked\n"
    try:
        with pytest.raises(ExportBusyError, match="Another export is already running on this machine"):
            await _export(str(tiny_checkpoint), REFERENCE_OPTIONS, session_models_dir)
    finally:
        holder.kill()
        await holder.wait()
    assert _snapshot(session_models_dir) == before


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from model.export import export_lock
with export_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""
