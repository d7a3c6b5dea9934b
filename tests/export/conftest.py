"""Fixtures for export tests: a tiny random Phi-3 checkpoint, exported once per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bot.manager import ConversationConfig, ConversationManager
from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.store import MemoryHistoryStore
from model.engine import ChatMessage, GenerationParams, ModelInfo, TokenStream
from model.export import ExportResult, ExportTarget, ProgressEvent, export_model
from model.export_checks import missing_export_packages
from model.export_options import REFERENCE_OPTIONS, ExportRequest
from model.loader import load_engine
from model.openvino_engine import OpenVINOEngine
from model.random_phi3 import build_random_phi3
from model.slot import EngineSlot

MAX_NEW_TOKENS = 16
RUNTIME = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}

requires_export_extra = pytest.mark.skipif(
    bool(missing_export_packages()), reason="needs the export extra: pip install -e '.[export]'"
)


class SharedEngine:
    """A real engine seen through a slot that must not close it (session engines outlive each test).

    Records the prompts it is asked to continue and whether the slot released it.
    """

    def __init__(self, engine: OpenVINOEngine) -> None:
        self.engine = engine
        self.prompts: list[str] = []
        self.released = False

    @property
    def info(self) -> ModelInfo:
        return self.engine.info

    @property
    def control_tokens(self) -> frozenset[str]:
        return self.engine.control_tokens

    async def encode(self, text: str) -> list[int]:
        assert not self.released, "a released engine was used"
        return await self.engine.encode(text)

    async def count_tokens(self, text: str) -> int:
        return await self.engine.count_tokens(text)

    def apply_chat_template(self, messages: Sequence[ChatMessage]) -> str:
        return self.engine.apply_chat_template(messages)

    def stream(self, prompt: str, params: GenerationParams) -> TokenStream:
        assert not self.released, "a released engine was used"
        self.prompts.append(prompt)
        return self.engine.stream(prompt, params)

    async def aclose(self) -> None:
        self.released = True


def manager_on(slot: EngineSlot, max_new_tokens: int = MAX_NEW_TOKENS) -> ConversationManager:
    """A conversation manager with in-memory history over ``slot``."""
    config = ConversationConfig(system_prompt=DEFAULT_SYSTEM_PROMPT, max_new_tokens=max_new_tokens)
    return ConversationManager(slot, MemoryHistoryStore(), config)


async def ignore_progress(event: ProgressEvent) -> None:
    """A progress sink for exports whose progress a test does not look at."""


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random two-layer Phi-3 checkpoint with a BPE tokenizer and Phi-3's chat template."""
    if missing_export_packages():
        pytest.skip("needs the export extra: pip install -e '.[export]'")
    return build_random_phi3(tmp_path_factory.mktemp("tiny-phi3"))


@pytest.fixture(scope="session")
def session_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory shared by the session's reference export."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
async def exported(tiny_checkpoint: Path, session_models_dir: Path) -> ExportResult:
    """The tiny checkpoint exported with the reference parameters (once per session)."""
    request = ExportRequest(str(tiny_checkpoint), REFERENCE_OPTIONS)
    target = ExportTarget(session_models_dir, "CPU", RUNTIME)
    return await export_model(request, target, ignore_progress, requested_by="test session")


@pytest.fixture(scope="session")
async def exported_engine(exported: ExportResult) -> AsyncIterator[OpenVINOEngine]:
    """The reference export loaded on CPU (never closed by a test)."""
    engine = load_engine(exported.path, "CPU", RUNTIME)
    yield engine
    await engine.aclose()
