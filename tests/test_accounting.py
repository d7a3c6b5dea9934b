"""Every message is counted by outcome, and each reply logs one line without its text."""

from __future__ import annotations

import logging

import pytest

from adapters.memory import MemorySurface
from bot.admin import AdminPolicy, NoAdminActions
from bot.admission import Admission, AdmissionLimits
from bot.core import Core
from bot.manager import ConversationConfig, ConversationManager
from bot.store import MemoryHistoryStore
from bot.types import ConversationKey, Identity, Incoming
from model.openvino_engine import OpenVINOEngine
from model.slot import EngineSlot
from tests.conftest import FailingEngine, make_manager

KEY = ConversationKey("memory", "general")
AUTHOR = Identity("memory", "tester")
SECRET_QUESTION = "What colour is the secret cat called Marmalade?"


def counted(core: Core, outcome: str) -> float:
    value = core.metrics.registry.get_sample_value("bot_messages_total", {"platform": "memory", "outcome": outcome})
    return value or 0.0


def core_over(manager: ConversationManager, **limits: object) -> Core:
    admission = Admission(AdmissionLimits(user_rate=None, **limits))  # type: ignore[arg-type]
    return Core(manager, AdminPolicy({}), NoAdminActions(), 10.0, admission)


async def test_an_answer_is_counted_and_logged_without_its_text(
    engine: OpenVINOEngine, caplog: pytest.LogCaptureFixture
) -> None:
    core = core_over(make_manager(engine))
    with caplog.at_level(logging.INFO, logger="bot.replies"):
        await core.submit(Incoming(KEY, AUTHOR, SECRET_QUESTION), MemorySurface())
    assert counted(core, "answered") == 1
    tokens_out = core.metrics.registry.get_sample_value("bot_tokens_out_total", {"platform": "memory"})
    assert tokens_out is not None and tokens_out > 0
    (record,) = [r for r in caplog.records if r.name == "bot.replies"]
    assert record.__dict__["conversation"] == str(KEY) and record.__dict__["outcome"] == "answered"
    assert record.__dict__["tokens_out"] == tokens_out and record.__dict__["latency_s"] > 0
    assert "Marmalade" not in caplog.text


async def test_failed_refused_and_busy_are_told_apart(engine: OpenVINOEngine) -> None:
    failing = ConversationManager(EngineSlot(FailingEngine(engine)), MemoryHistoryStore(), ConversationConfig("", 16))  # type: ignore[arg-type]
    core = core_over(failing, max_message_chars=100, max_waiting=1)
    await core.submit(Incoming(KEY, AUTHOR, "Tell me about the sea."), MemorySurface())
    assert counted(core, "failed") == 1
    await core.submit(Incoming(KEY, AUTHOR, "x" * 101), MemorySurface())
    assert counted(core, "refused") == 1
    first = core.submit(Incoming(KEY, AUTHOR, "Tell me about rivers."), MemorySurface())
    await core.submit(Incoming(KEY, AUTHOR, "And lakes?"), MemorySurface())  # one reply already in line
    await first
    assert counted(core, "busy") == 1
    await core.submit(Incoming(KEY, AUTHOR, "/help"), MemorySurface())
    assert counted(core, "answered") == 1
