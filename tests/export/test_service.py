"""Admin re-export: one at a time, audited, swapping the served model without dropping replies."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.admin import AdminActions
from bot.manager import ConversationManager
from bot.reply import Reply
from bot.settings import Settings
from bot.types import ConversationKey
from entry.compose import export_service
from model.manifest import current_export, read_manifest
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.export.conftest import SharedEngine, manager_on, requires_export_extra
from tests.export.converters import offline_hub

pytestmark = requires_export_extra


async def chatter(manager: ConversationManager, index: int, stop: asyncio.Event, replies: list[Reply]) -> None:
    """One conversation sending a message every few tenths of a second until ``stop``."""
    key = ConversationKey("busy", f"channel-{index}")
    number = 0
    while not stop.is_set():
        reply = manager.reply(key, f"Message {number}")
        await reply.complete()
        replies.append(reply)
        number += 1
        # Leave the two CI cores mostly to the export; the replies only need to keep coming.
        await asyncio.sleep(0.3)


async def test_admin_export_swaps_models_while_serving(
    engine: OpenVINOEngine,
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub_id = offline_hub(tmp_path, monkeypatch, tiny_checkpoint)  # chat exports allowlisted hub ids only
    old = SharedEngine(engine)
    slot = EngineSlot(old)
    manager = manager_on(slot, max_new_tokens=8)
    settings = Settings(
        data_dir=tmp_path / "data", ov_properties={"PERFORMANCE_HINT": "LATENCY"}, export_sources=[hub_id]
    )
    service: AdminActions = export_service(slot, settings)
    lines: list[str] = []

    async def progress(line: str) -> None:
        lines.append(line)

    stop = asyncio.Event()
    replies: list[Reply] = []
    busy = [asyncio.create_task(chatter(manager, i, stop, replies)) for i in range(3)]
    caplog.set_level(logging.INFO, logger="bot.audit")
    first = asyncio.create_task(service.export("admin-1", f"{hub_id} --ratio 0.6", progress))
    await asyncio.sleep(0)  # the first request takes the export slot
    second = await service.export("admin-2", hub_id, progress)
    message = await asyncio.wait_for(first, timeout=240)
    stop.set()
    await asyncio.gather(*busy)

    assert second.startswith("An export is already running (requested by admin-1 at ")
    assert message.startswith("Export finished in "), message
    exported = current_export(settings.models_dir)
    assert exported is not None and exported.parent == (settings.models_dir / "exports").resolve()
    manifest = read_manifest(exported)
    assert manifest is not None and manifest["requested_by"] == "admin-1"
    assert f"Now answering with {exported.name}; replies already being written finish on {engine.info.name}." in message
    assert [line for line in lines if "…" in line and not line.startswith("Loading")] == [
        "[1/5] Checking the request…",
        "[2/5] Converting with optimum-cli…",
        "[3/5] Validating the exported model…",
        "[4/5] Writing the manifest…",
        "[5/5] Switching the current model…",
    ]
    assert replies and all(r.stats is not None and r.stats.model_name == engine.info.name for r in replies)
    assert old.released and slot.current.info.path == exported
    after = manager.reply(ConversationKey("busy", "later"), "Who answers now?")
    await after.complete()
    assert after.stats is not None and after.stats.model_name == exported.name == manager.model_name

    audit = [record.getMessage() for record in caplog.records if record.name == "bot.audit"]
    assert any(
        m.startswith("export requested by admin-1 at ") and f"source={hub_id}" in m and '"ratio": 0.6' in m
        for m in audit
    ), audit
    assert any(m.startswith("export by admin-2 refused at ") and "already running" in m for m in audit), audit
    assert any(m.startswith("export by admin-1 succeeded at ") and exported.name in m for m in audit), audit
    await slot.aclose()


async def test_help_and_bad_arguments_answer_without_exporting(
    engine: OpenVINOEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slot = EngineSlot(SharedEngine(engine))
    service = export_service(slot, Settings(data_dir=tmp_path / "data"))

    async def progress(line: str) -> None:
        raise AssertionError(f"no progress expected, got {line!r}")

    caplog.set_level(logging.INFO, logger="bot.audit")
    assert (await service.export("admin", "help", progress)).startswith("Usage: /export [SOURCE]")
    answer = await service.export("admin", "--group-size many", progress)
    assert answer.startswith("Bad export parameters: --group-size: Input should be a valid integer")
    assert "Usage: /export" in answer
    assert any("export by admin refused" in r.getMessage() for r in caplog.records if r.name == "bot.audit")
    assert not (tmp_path / "data" / "models" / "exports").exists()
