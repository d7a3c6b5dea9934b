"""P6: P1-P3 on a model of Phi-3-mini's shape, exported offline with the reference int4 parameters.

Speed does not depend on the weights' values, so random weights with Phi-3-mini-4k-instruct's
dimensions measure the production shape without a model hub.  Building and exporting it takes a
few minutes and about 10 GB of disk for a while (the float16 checkpoint is removed after export).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from bot.settings import Settings
from entry.bench.report import Figure
from model.export import ExportTarget, ProgressEvent, export_model
from model.export_options import REFERENCE_OPTIONS, ExportRequest
from model.random_phi3 import MINI, build_random_phi3

log = logging.getLogger(__name__)

# P1-P3 for the shape, measured by the caller's serving benchmark on the exported model's path.
ServingFigures = Callable[[Path], Awaitable[list[Figure]]]


async def _log_progress(event: ProgressEvent) -> None:
    if event.line is None:
        log.info("Exporting the Phi-3-mini shape: step %d of %d, %s", event.step, event.total, event.stage)


async def p6_phi3_shape(settings: Settings, serving: ServingFigures) -> list[Figure]:
    """Build, export and measure the Phi-3-mini-shaped model; the figures are P1-P3's, keyed P6."""
    with tempfile.TemporaryDirectory(prefix="bot-bench-phi3-") as scratch:
        checkpoint = Path(scratch) / "checkpoint"
        log.info("Building a random checkpoint of Phi-3-mini's shape in %s", checkpoint)
        await asyncio.to_thread(build_random_phi3, checkpoint, MINI)
        target = ExportTarget(Path(scratch) / "models", settings.device, settings.runtime_properties())
        exported = await export_model(ExportRequest(str(checkpoint), REFERENCE_OPTIONS), target, _log_progress)
        await asyncio.to_thread(shutil.rmtree, checkpoint)
        figures = await serving(exported.path)
    note = f"Phi-3-mini shape (random weights), exported in {exported.seconds:.0f} s with the reference parameters."
    return [dataclasses.replace(f, key=f"P6 ({f.key})", note=f"{note} {f.note}".strip()) for f in figures]
