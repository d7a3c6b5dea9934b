"""Admission control: the busy answer, the per-user rate, the length limit and the reply deadline."""

from __future__ import annotations

import asyncio

import pytest

from adapters.memory import MemoryAdapter
from bot.admin import AdminPolicy, NoAdminActions
from bot.admission import BUSY, SLOW_DOWN, TOO_LONG, Admission, AdmissionLimits
from bot.core import Core
from bot.manager import DEADLINE_NOTICE, ConversationManager
from bot.settings import load_settings
from bot.types import Identity
from model.openvino_engine import OpenVINOEngine
from tests.conftest import make_manager

ADA, BOB = Identity("memory", "ada"), Identity("memory", "bob")


def test_a_message_over_the_length_limit_is_refused_without_using_the_rate() -> None:
    admission = Admission(AdmissionLimits(max_message_chars=10, user_rate="1/minute"))
    assert admission.refusal(ADA, "x" * 11, 0) == TOO_LONG.format(length=11, limit=10)
    assert admission.refusal(ADA, "x" * 10, 0) is None


def test_the_busy_answer_names_the_replies_ahead_and_a_wait() -> None:
    admission = Admission(AdmissionLimits(max_waiting=2, max_generating=1))
    admission.timed(3.0)  # replies have been taking about 4.6 s (5 s first guess, smoothed)
    assert admission.refusal(ADA, "hi", 1, generating=1) is None
    busy = admission.refusal(ADA, "hi", 2, generating=1)
    assert busy == BUSY.format(ahead=1, writing=1, seconds=10)
    assert busy.startswith("I'm busy: 1 replies are in line and 1 being written.")  # type: ignore[union-attr]


def test_the_busy_wait_shrinks_with_the_replies_generating_at_once() -> None:
    admission = Admission(AdmissionLimits(max_waiting=8, max_generating=4))
    # Eight replies in the bot, four writing at once: about two replies' time until the line is through.
    assert admission.refusal(ADA, "hi", 8, generating=4) == BUSY.format(ahead=4, writing=4, seconds=10)


def test_each_user_has_their_own_rate() -> None:
    now = [1000.0]
    admission = Admission(AdmissionLimits(user_rate="2/minute"), clock=lambda: now[0])
    assert admission.refusal(ADA, "one", 0) is None and admission.refusal(ADA, "two", 0) is None
    refused = admission.refusal(ADA, "three", 0)
    assert refused is not None and refused.startswith(SLOW_DOWN.split("{")[0])
    assert admission.refusal(BOB, "one", 0) is None


def test_no_rate_means_no_limit() -> None:
    admission = Admission(AdmissionLimits(user_rate=None))
    assert all(admission.refusal(ADA, "hi", 0) is None for _ in range(100))


def test_a_rate_that_cannot_be_read_is_a_clear_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOT_USER_RATE", "lots")
    with pytest.raises(ValueError, match=r"BOT_USER_RATE: .*10/minute"):
        load_settings()


def core_with(manager: ConversationManager, **limits: object) -> Core:
    admission = Admission(AdmissionLimits(**limits))  # type: ignore[arg-type]
    return Core(manager, AdminPolicy({}), NoAdminActions(), admission=admission)


async def test_the_message_past_the_bound_is_answered_busy_at_once(engine: OpenVINOEngine) -> None:
    bot = MemoryAdapter(core_with(make_manager(engine, max_new_tokens=48), max_waiting=1))
    story = asyncio.create_task(bot.say("Tell me a story about a lighthouse.", channel="a"))
    await asyncio.sleep(0.05)  # the story is being written
    busy = await bot.say("What is the capital of France?", channel="b")
    assert busy.startswith("I'm busy: 0 replies are in line and 1 being written.") and not story.done()
    assert (await story).strip()
    assert "Paris" in await bot.say("What is the capital of France?", channel="b")  # room again


async def test_a_refused_message_is_stored_nowhere(engine: OpenVINOEngine) -> None:
    bot = MemoryAdapter(core_with(make_manager(engine), max_message_chars=100))
    assert await bot.say("x" * 101) == TOO_LONG.format(length=101, limit=100)
    assert await bot.say("/reset") == "Conversation forgotten (0 messages)."


async def test_one_user_past_their_rate_is_asked_to_slow_down(engine: OpenVINOEngine) -> None:
    bot = MemoryAdapter(core_with(make_manager(engine, max_new_tokens=4), user_rate="2/minute"))
    await bot.say("One.")
    await bot.say("Two.")
    assert (await bot.say("Three.")).startswith("You're sending messages faster than I can answer.")
    bot.user = "someone-else"
    assert not (await bot.say("Three.")).startswith("You're sending")


async def test_a_reply_past_its_deadline_stops_with_a_note(engine: OpenVINOEngine) -> None:
    bot = MemoryAdapter(core_with(make_manager(engine, max_new_tokens=200), reply_deadline_s=0.2))
    posts = await bot.posts("Tell me a long story about the sea.")
    assert posts[-1].text == DEADLINE_NOTICE.format(seconds=0.2)
    assert bot.core.manager.last_stats(bot.key()) is not None  # the stopped reply was recorded
    assert bot.core.manager.last_stats(bot.key()).generated_tokens < 200  # type: ignore[union-attr]
