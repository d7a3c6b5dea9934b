"""Shared fixtures: the real bundled model, loaded once per test session."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from adapters.memory import MemoryAdapter
from bot.admin import AdminActions, AdminPolicy, NoAdminActions
from bot.admission import Admission, AdmissionLimits
from bot.core import Core
from bot.manager import ConversationConfig, ConversationManager
from bot.settings import DEFAULT_SYSTEM_PROMPT
from bot.store import MemoryHistoryStore
from model.bundled import ensure_bundled_model
from model.engine import EngineError, GenerationParams
from model.loader import load_engine
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot

# CI replays the same examples every run (a red build then means a regression, not a new draw);
# local runs keep exploring new ones.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

REPO = Path(__file__).resolve().parent.parent
# Kept between runs (and ignored by git) so the suite downloads the model once.
MODELS_CACHE = Path(os.environ.get("BOT_TEST_MODELS_DIR", REPO / ".cache" / "models"))
TEST_MAX_NEW_TOKENS = 48
_PLATFORM_VARIABLES = ("DISCORD_", "SLACK_", "BOT_")


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test reads the developer's .env or settings, or writes outside tmp_path."""
    for name in list(os.environ):
        if name.startswith(_PLATFORM_VARIABLES) and name != "BOT_TEST_MODELS_DIR":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_DATA_DIR", str(tmp_path / "data"))
    yield tmp_path


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """A command run in-process (typer's CliRunner) points logging at a stream closed after it; undo that."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def bundled_model() -> Path:
    """The bundled GGUF model, fetched once into the test cache."""
    return ensure_bundled_model(MODELS_CACHE, progress=False)


@pytest.fixture(scope="session")
def engine(bundled_model: Path) -> OpenVINOEngine:
    """The real bundled model on CPU, shared by the whole session (never closed by a test)."""
    return load_engine(bundled_model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"})


def make_manager(engine: OpenVINOEngine, **config: object) -> ConversationManager:
    """A manager over the shared engine with an in-memory history."""
    settings: dict[str, object] = {"system_prompt": DEFAULT_SYSTEM_PROMPT, "max_new_tokens": TEST_MAX_NEW_TOKENS}
    settings.update(config)
    return ConversationManager(EngineSlot(engine), MemoryHistoryStore(), ConversationConfig(**settings))  # type: ignore[arg-type]


class RecordingEngine:
    """The real engine, remembering every prompt it is asked to continue.

    With ``context_size`` it tells the core the model's context is that small (as ``BOT_CONTEXT_SIZE`` would):
    a long discussion overflows it without a slow prompt of thousands of tokens.
    """

    def __init__(self, engine: OpenVINOEngine, context_size: int | None = None) -> None:
        self._engine = engine
        self.prompts: list[str] = []
        self.info = engine.info if context_size is None else replace(engine.info, context_size=context_size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def stream(self, prompt: str, params: GenerationParams) -> Any:
        self.prompts.append(prompt)
        return self._engine.stream(prompt, params)

    async def aclose(self) -> None:
        """The shared engine outlives every test."""


class FailingEngine:
    """The real engine, failing after a few chunks of every reply (a lost device, say)."""

    def __init__(self, engine: OpenVINOEngine) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def stream(self, prompt: str, params: GenerationParams) -> Any:
        return _FailingStream(self._engine.stream(prompt, params))

    async def aclose(self) -> None:
        """The shared engine outlives every test."""


class _FailingStream:
    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.stats = None

    async def __aiter__(self) -> AsyncIterator[str]:
        count = 0
        async for chunk in self._stream:
            yield chunk
            count += 1
            if count == 3:
                raise EngineError("the device was lost")

    async def aclose(self) -> None:
        await self._stream.aclose()


@pytest.fixture
def manager(engine: OpenVINOEngine) -> ConversationManager:
    """A fresh conversation manager on the real model."""
    return make_manager(engine)


def make_core(
    manager: ConversationManager,
    admin_ids: dict[str, list[str]] | None = None,
    actions: AdminActions | None = None,
    stop_grace_s: float = 10.0,
) -> Core:
    """The core over ``manager``; nobody is an admin unless ``admin_ids`` lists them per platform.

    Users have no message rate here: tests that send many messages test other things.
    """
    admission = Admission(AdmissionLimits(user_rate=None))
    return Core(manager, AdminPolicy(admin_ids or {}), actions or NoAdminActions(), stop_grace_s, admission)


@pytest.fixture
def core(manager: ConversationManager) -> Core:
    """The core over a fresh manager on the real model."""
    return make_core(manager)


@pytest.fixture
async def bot(core: Core) -> AsyncIterator[MemoryAdapter]:
    """The whole bot behind an in-memory adapter: `await bot.say("hi")`."""
    yield MemoryAdapter(core)
