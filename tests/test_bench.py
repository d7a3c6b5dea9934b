"""`bot bench` runs end to end and writes its table (a smoke: timing targets belong to the benchmark itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.bundled import bundled_model_path

pytestmark = pytest.mark.model

FIGURES = ("P1", "P2", "P3", "P4", "P5")


def test_quick_bench_writes_every_figure_beside_its_target(bundled_model: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cached = bundled_model_path(data_dir / "models")
    cached.parent.mkdir(parents=True)
    cached.symlink_to(bundled_model)  # the bench finds the bundled model where the bot keeps it, without a download
    output = tmp_path / "BENCHMARKS.md"
    environment = {**os.environ, "BOT_DATA_DIR": str(data_dir), "BOT_ENGINE": "batching"}
    done = subprocess.run(
        [sys.executable, "-m", "entry", "bench", "--quick", "--output", str(output)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = output.read_text(encoding="utf-8")
    assert re.search(r"on \d{4}-\d\d-\d\d: .+, \d+ cores", report), report
    assert "the bot's engine: batching" in report
    rows = [line for line in report.splitlines() if line.startswith("| P")]
    assert sorted({row.split("|")[1].strip() for row in rows}) == list(FIGURES)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert re.search(r"\d", cells[2]), f"no measurement in {row}"
        assert cells[5].startswith(("≥", "≤")), f"no target in {row}"
    assert report in done.stdout  # the table is also printed
