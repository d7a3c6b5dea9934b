"""Stand-in converters (small Python scripts run as the converter child) and a hub checkpoint cached offline.

``ExportTarget.converter`` replaces optimum-cli's command with one of these, so the export machinery
(process group, death signal, environment, scratch directory, time limit, cancel) runs for real around a
child whose behaviour the test chooses.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import psutil
import pytest

# Prints its pid and a grandchild's, then hangs: a converter that never finishes.
HANG = """
import os, subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("converting", os.getpid(), grandchild.pid, flush=True)
time.sleep(600)
"""

# Writes what it can see to argv[1]: its environment and cwd, and what reading the environment of its parent
# and of the bot (pid argv[2]) through /proc gave; then fails.
SPY = """
import json, os, sys
report = {"environment": dict(os.environ), "cwd": os.getcwd(), "read": {}}
for pid in (os.getppid(), int(sys.argv[2])):
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            report["read"][str(pid)] = handle.read().decode(errors="replace")
    except OSError as error:
        report["read"][str(pid)] = f"refused: {type(error).__name__}"
with open(sys.argv[1], "w") as out:
    json.dump(report, out)
print("spied", flush=True)
sys.exit(3)
"""

HUB_ID = "acme/tiny-phi3"
_REVISION = "0" * 40
_CONFIG = {"model_type": "phi3", "hidden_size": 128, "intermediate_size": 256}


def converter(tmp_path: Path, name: str, code: str, *args: str) -> tuple[str, ...]:
    """The argv prefix that runs ``code`` as the converter (its own arguments first)."""
    script = tmp_path / f"{name}.py"
    script.write_text(code)
    return (sys.executable, str(script), *args)


def local_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint directory that passes the checks before conversion (a config, no weights)."""
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(_CONFIG))
    return directory


def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint: Path | None = None) -> str:
    """Cache ``HUB_ID`` as the Hub's client lays it out and go offline, here and in children; return the id.

    The cached repository holds ``checkpoint``'s files (a real export can then run from it), or only a config.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    cache = home / "hub"  # where every Hugging Face library looks under HF_HOME
    repo = cache / f"models--{HUB_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / _REVISION
    if checkpoint is None:
        snapshot.mkdir(parents=True)
        (snapshot / "config.json").write_text(json.dumps(_CONFIG))
    else:
        shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(_REVISION)
    # The client reads both once at import; these are the same switches, set for this test.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(home))  # for the converter, which gets HF_HOME and HF_HUB_* variables
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return HUB_ID


def pids_of(line: str) -> list[int]:
    """The converter's and its grandchild's pid from ``HANG``'s first line."""
    words = line.split()
    index = words.index("converting")
    return [int(words[index + 1]), int(words[index + 2])]


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs (a zombie waiting for a parent that is not us to reap it counts)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until every pid is gone; return those still running after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if not gone(pid)]
        if not alive:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if not gone(pid)]
