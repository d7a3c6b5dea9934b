"""Trimming a conversation to the context by token counts."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.trimming import CUT_NOTE, ContextTooSmall, fit_prompt
from model.engine import ChatMessage
from model.openvino_engine import OpenVINOEngine
from model.phi3 import render_phi3

SYSTEM = ChatMessage("system", "You are a helpful assistant.")


async def count_words(text: str) -> int:
    """A stand-in tokenizer for the pure-logic tests: one token per whitespace-separated word."""
    return len(text.split())


def conversation(lengths: Sequence[int]) -> list[ChatMessage]:
    """Alternating turns ending with the user's new message, as histories do (so odd lengths start with the user)."""
    roles = ["user", "assistant"] if len(lengths) % 2 else ["assistant", "user"]
    return [ChatMessage(roles[i % 2], " ".join(f"w{i}" for _ in range(n))) for i, n in enumerate(lengths)]  # type: ignore[arg-type]


async def test_short_conversation_is_untouched() -> None:
    turns = conversation([3, 4, 5])
    fitted = await fit_prompt(SYSTEM, turns, render_phi3, count_words, budget=100)
    assert fitted.prompt == render_phi3([SYSTEM, *turns])
    assert fitted.dropped_turns == 0 and not fitted.cut_message


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=30), budget=st.integers(60, 400))
async def test_oldest_turns_go_first_and_the_result_fits(lengths: list[int], budget: int) -> None:
    turns = conversation(lengths)
    fitted = await fit_prompt(SYSTEM, turns, render_phi3, count_words, budget)
    assert fitted.tokens == await count_words(fitted.prompt) <= budget
    assert fitted.prompt.startswith(render_phi3([SYSTEM], add_generation_prompt=False).removesuffix("<|endoftext|>"))
    if not fitted.cut_message:
        kept = turns[fitted.dropped_turns :]
        assert fitted.prompt == render_phi3([SYSTEM, *kept])
        assert kept[0].role == "user"  # history goes in pairs: never an assistant turn first
        earlier_starts = [i for i in range(fitted.dropped_turns) if turns[i].role == "user"]
        if earlier_starts:  # keeping one more pair would not have fit
            longer = render_phi3([SYSTEM, *turns[earlier_starts[-1] :]])
            assert await count_words(longer) > budget


async def test_a_history_starting_with_an_assistant_turn_is_not_sent_that_way() -> None:
    turns = conversation([3, 4, 5, 6])  # assistant, user, assistant, user
    fitted = await fit_prompt(SYSTEM, turns, render_phi3, count_words, budget=1000)
    assert fitted.dropped_turns == 1
    assert fitted.prompt == render_phi3([SYSTEM, *turns[1:]])


async def test_over_long_message_is_cut_with_a_visible_note() -> None:
    turns = conversation([5, 500])
    fitted = await fit_prompt(SYSTEM, turns, render_phi3, count_words, budget=120)
    assert fitted.cut_message and fitted.dropped_turns == 1
    assert CUT_NOTE.strip() in fitted.prompt
    assert fitted.tokens <= 120
    assert "w1 w1" in fitted.prompt  # the beginning of the message is kept


async def test_system_prompt_too_long_for_the_context_is_explained() -> None:
    huge_system = ChatMessage("system", "word " * 300)
    with pytest.raises(ContextTooSmall, match="BOT_MAX_NEW_TOKENS"):
        await fit_prompt(huge_system, conversation([2]), render_phi3, count_words, budget=100)


async def test_trimming_uses_real_token_counts(engine: OpenVINOEngine) -> None:
    turns = [ChatMessage("user" if i % 2 == 0 else "assistant", f"Message number {i}. " * 20) for i in range(41)]
    budget = 600
    fitted = await fit_prompt(SYSTEM, turns, engine.apply_chat_template, engine.count_tokens, budget)
    assert fitted.tokens == len(await engine.encode(fitted.prompt)) <= budget
    assert fitted.dropped_turns > 0
    assert "Message number 40." in fitted.prompt and "Message number 0." not in fitted.prompt
    assert fitted.prompt.startswith("<|im_start|>system\nYou are a helpful assistant.")
