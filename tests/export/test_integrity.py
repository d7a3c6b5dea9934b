"""Exports on disk: a tampered one is refused at load and at hot swap; leftovers and old ones go at start."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model.engine import ModelLoadError
from model.export import ExportResult
from model.export_cleanup import clean_exports
from model.loader import load_engine
from model.manifest import MANIFEST_FORMAT, exports_dir, set_current_export, write_manifest
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from model.switcher import ModelSwitcher
from tests.export.conftest import RUNTIME, SharedEngine, requires_export_extra


@pytest.fixture
def copy_of_export(exported: ExportResult, tmp_path: Path) -> Path:
    """A private copy of the session's export, manifest included, to damage."""
    return Path(shutil.copytree(exported.path, tmp_path / "models" / "exports" / exported.path.name))


def _flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@requires_export_extra
def test_an_untouched_copy_loads(copy_of_export: Path) -> None:
    (copy_of_export / "NOTES").write_text("not a model file: allowed beside it")
    engine = load_engine(copy_of_export, "CPU", RUNTIME)
    assert engine.info.path == copy_of_export


@requires_export_extra
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: _flip_one_byte(d / "openvino_model.bin"), "changed openvino_model.bin"),
        (lambda d: _flip_one_byte(d / "openvino_tokenizer.xml"), "changed openvino_tokenizer.xml"),
        (lambda d: (d / "openvino_detokenizer.bin").unlink(), "missing openvino_detokenizer.bin"),
        (lambda d: (d / "extra_weights.bin").write_bytes(b"\0" * 64), "unexpected extra_weights.bin"),
    ],
)
def test_a_tampered_export_is_refused_naming_the_file(copy_of_export: Path, damage: object, expected: str) -> None:
    assert callable(damage)
    damage(copy_of_export)
    with pytest.raises(ModelLoadError) as caught:
        load_engine(copy_of_export, "CPU", RUNTIME)
    message = str(caught.value)
    assert f"does not match its export-manifest.json: {expected}." in message, message
    assert "export it again with `bot export`" in message


@requires_export_extra
async def test_a_tampered_export_is_refused_at_hot_swap(engine: OpenVINOEngine, copy_of_export: Path) -> None:
    old = SharedEngine(engine)
    slot = EngineSlot(old)
    _flip_one_byte(copy_of_export / "openvino_model.bin")
    with pytest.raises(ModelLoadError, match=r"changed openvino_model\.bin"):
        await ModelSwitcher(slot, "CPU", RUNTIME).switch_to(copy_of_export)
    assert slot.current is old and not old.released


def _export(models_dir: Path, name: str, finished: str | None) -> Path:
    """An export directory: complete (a manifest, finished at ``finished``) or, with ``None``, unfinished."""
    directory = exports_dir(models_dir) / name
    directory.mkdir(parents=True)
    (directory / "openvino_model.bin").write_bytes(b"weights")
    if finished is not None:
        write_manifest(directory, {"format": MANIFEST_FORMAT, "finished": finished})
    return directory


def test_start_removes_unfinished_exports_and_keeps_the_newest_and_the_current(tmp_path: Path) -> None:
    models = tmp_path / "models"
    oldest = _export(models, "a-oldest", "2025-01-01T00:00:00+00:00")
    old = _export(models, "z-old", "2025-02-01T00:00:00+00:00")
    newer = _export(models, "b-newer", "2025-03-01T00:00:00+00:00")
    newest = _export(models, "c-newest", "2025-04-01T00:00:00+00:00")
    killed = _export(models, "d-killed", None)
    pinned = _export(models, "e-pinned-unfinished", None)
    set_current_export(models, oldest)

    removed = clean_exports(models, keep=2, protect=[pinned])

    assert sorted(removed) == sorted([old, killed])
    assert sorted(p.name for p in exports_dir(models).iterdir()) == sorted(
        p.name for p in (oldest, newer, newest, pinned)
    )
    assert clean_exports(models, keep=2, protect=[pinned]) == []


def test_nothing_is_removed_while_another_export_runs(tmp_path: Path) -> None:
    from model.export import export_lock

    models = tmp_path / "models"
    killed = _export(models, "killed", None)
    with export_lock(models):
        assert clean_exports(models, keep=1) == []
    assert killed.exists()
    assert clean_exports(models, keep=1) == [killed]
