"""`bot bench` runs end to end and writes its table (a smoke: timing targets belong to the benchmark itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.settings import Settings
from entry.bench.concurrency import Measured
from entry.bench.remote import remote_figures
from entry.bench.workload import QUESTIONS, Timed
from entry.llama_server import LlamaServerError, free_port, llama_server, require_server_extra
from model.bundled import bundled_model_path
from model.engine import ChatMessage

pytestmark = pytest.mark.model

FIGURES = ("P1", "P1 remote", "P2", "P2 remote", "P3", "P4", "P5")


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
        if not cells[0].endswith("remote"):
            assert cells[5].startswith(("≥", "≤")), f"no target in {row}"
    assert_remote_beside_in_process(rows)
    assert report in done.stdout  # the table is also printed


# --- P1 and P2 through a model server (llama.cpp's server started by the bench on loopback) ---------------


def assert_remote_beside_in_process(rows: list[str]) -> None:
    """The remote rows follow P2, each a measured ratio to the bot's in-process engine from the same run."""
    keys = [row.split("|")[1].strip() for row in rows]
    assert keys[keys.index("P2") + 1] == "P1 remote", keys
    remote = [row for row in rows if "remote" in row.split("|")[1]]
    assert len(remote) == 3, remote
    assert "llama.cpp server, same GGUF vs in-process" in remote[0]
    for row in remote:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert "in-process" in cells[3] and re.search(r"\d", cells[3]), row
        assert re.fullmatch(r"\d+\.\d\dx", cells[4]), f"no ratio in {row}"


def _server_extra_missing() -> bool:
    try:
        require_server_extra()
    except LlamaServerError:
        return True
    return False


@pytest.mark.skipif(_server_extra_missing(), reason="needs llama.cpp's server: pip install -e '.[bench]'")
async def test_engine_url_measures_the_servers_named_and_a_down_one_costs_only_its_rows(bundled_model: Path) -> None:
    # The in-process side is given: this measures only what `--engine-url` adds.
    seen = Measured([Timed(0.0, 0.5, 1.0, 4) for _ in QUESTIONS], Timed(0.0, 0.25, 0.5, 2))
    seen.history = [ChatMessage("user", "Tell me about the harbour."), ChatMessage("assistant", "It is old.")]
    settings = Settings(engine_capacity=2, model_path=bundled_model)  # the model the server serves
    unnamed = await remote_figures(Settings(), bundled_model, ["http://127.0.0.1:1/v1"], seen, 4, 2)
    assert "set BOT_MODEL_PATH" in unnamed[0].note and unnamed[0].ratio is None
    async with llama_server(bundled_model) as server:
        measured = await remote_figures(settings, bundled_model, [server.url], seen, 4, 2)
    assert [f.key for f in measured] == ["P1 remote", "P1 remote", "P2 remote"]
    assert f"{server.url} vs in-process" in measured[0].measure
    assert all(f.ratio is not None and f.ratio > 0 for f in measured)
    assert measured[0].baseline == "32 tok/s (the bot's engine, in-process)"  # 8 replies of 4 tokens in 1 s

    down = await remote_figures(settings, bundled_model, [f"http://127.0.0.1:{free_port()}/v1"], seen, 4, 2)
    assert [f.ours.startswith("failed (http://127.0.0.1:") for f in down] == [True, True]
    assert "is not reachable" in down[0].note and down[0].ratio is None
