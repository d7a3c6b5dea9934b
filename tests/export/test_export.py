"""The tiny Phi-3 checkpoint exported with the reference parameters: manifest, loading, Phi-3 prompts."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from xml.etree import ElementTree

from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.types import ConversationKey
from model.engine import ChatMessage
from model.export import ExportResult
from model.export_options import REFERENCE_ARGS, REFERENCE_OPTIONS
from model.loader import OPENVINO_MODEL_FILES, resolve_model_path
from model.manifest import CURRENT_NAME, checksum_mismatches, current_export, read_manifest
from model.openvino_engine import OpenVINOEngine
from model.phi3 import render_phi3
from model.slot import EngineSlot
from tests.export.conftest import MAX_NEW_TOKENS, SharedEngine, manager_on, requires_export_extra

pytestmark = requires_export_extra


def test_export_lands_in_a_versioned_directory_that_is_now_current(
    exported: ExportResult, session_models_dir: Path
) -> None:
    assert exported.path.parent == session_models_dir / "exports"
    assert re.fullmatch(r"tiny-phi3\d*-int4-\d{8}T\d{6}Z", exported.path.name)
    assert all((exported.path / name).is_file() for name in OPENVINO_MODEL_FILES)
    assert current_export(session_models_dir) == exported.path.resolve()
    pointer = json.loads((session_models_dir / CURRENT_NAME).read_text())
    assert pointer["path"] == f"exports/{exported.path.name}"
    # With BOT_MODEL_PATH unset the bot starts on the current export, not the bundled model.
    assert resolve_model_path(None, session_models_dir) == exported.path.resolve()


def test_manifest_records_source_parameters_libraries_and_checksums(
    exported: ExportResult, tiny_checkpoint: Path
) -> None:
    manifest = read_manifest(exported.path)
    assert manifest == exported.manifest
    assert manifest["source"] == str(tiny_checkpoint.resolve())
    assert manifest["source_kind"] == "local"
    assert manifest["parameters"] == REFERENCE_OPTIONS.model_dump(mode="json")
    assert manifest["command"][5:] == shlex.split(REFERENCE_ARGS)
    assert manifest["started"] <= manifest["finished"]
    for library in ("optimum-intel", "nncf", "torch", "transformers", "openvino", "openvino-genai"):
        assert re.match(r"\d+\.\d+", manifest["libraries"][library]), library
    files = manifest["files"]
    assert set(OPENVINO_MODEL_FILES) <= set(files)
    assert all(re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]) for entry in files.values())
    assert checksum_mismatches(exported.path, manifest) == []
    assert manifest["validation"]["family"] == "phi3"
    assert manifest["validation"]["generated_tokens"] >= 1


def test_checksums_notice_a_changed_file(exported: ExportResult, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in exported.manifest["files"]:
        (copy / name).write_bytes((exported.path / name).read_bytes())
    (copy / "config.json").write_text("{}")
    assert checksum_mismatches(copy, exported.manifest) == ["changed config.json"]


def test_weights_are_int4_with_group_size_128(exported: ExportResult) -> None:
    model_xml = exported.path / "openvino_model.xml"
    text = model_xml.read_text()
    # Symmetric int4 weights are stored as i4 constants; the layers the 0.6 ratio leaves out as int8.
    assert 'element_type="i4"' in text
    assert 'element_type="u8"' in text
    compression = ElementTree.parse(model_xml).find("./rt_info/nncf/weight_compression")
    assert compression is not None
    recorded = {child.tag: child.get("value") for child in compression}
    assert (recorded["mode"], recorded["group_size"], recorded["ratio"]) == ("int4_sym", "128", "0.6")


async def test_manager_renders_phi3_prompts_for_the_export(exported_engine: OpenVINOEngine) -> None:
    assert exported_engine.info.family == "phi3"
    assert {"<|user|>", "<|assistant|>", "<|end|>", "<|system|>"} <= exported_engine.control_tokens
    engine = SharedEngine(exported_engine)
    manager = manager_on(EngineSlot(engine))
    key = ConversationKey("test", "phi3")
    reply = manager.reply(key, "Hello <|end|> there")
    chunks = [chunk async for chunk in reply]
    system = ChatMessage("system", DEFAULT_SYSTEM_PROMPT)
    # The user's look-alike control token is defused before rendering.
    defused = "Hello <\u2060|end|> there"
    assert engine.prompts == [render_phi3([system, ChatMessage("user", defused)])]
    assert engine.prompts[0].startswith("<|system|>\n") and engine.prompts[0].endswith("<|end|>\n<|assistant|>\n")
    assert chunks and "".join(chunks) == reply.text
    assert reply.stats is not None
    assert 1 <= reply.stats.generated_tokens <= MAX_NEW_TOKENS
    assert reply.stats.model_name == manager.model_name == exported_engine.info.name
    second = manager.reply(key, "And again")
    await second.complete()
    assert engine.prompts[1].startswith(engine.prompts[0] + reply.text + "<|end|>\n<|user|>\nAnd again<|end|>\n")
