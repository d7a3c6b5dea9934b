"""Fitting a conversation into the model's context by real token counts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from model.engine import ChatMessage

TokenCounter = Callable[[str], Awaitable[int]]
Render = Callable[[Sequence[ChatMessage]], str]

CUT_NOTE = "\n[… message cut here: it was too long for the model's context]"


class ContextTooSmall(ValueError):
    """Not even the system prompt and a minimal message fit the context."""


@dataclass(frozen=True)
class FittedPrompt:
    """The prompt that fits, with what had to go to make it fit."""

    prompt: str
    tokens: int
    dropped_turns: int
    cut_message: bool


async def fit_prompt(
    system: ChatMessage | None,
    turns: Sequence[ChatMessage],
    render: Render,
    count: TokenCounter,
    budget: int,
) -> FittedPrompt:
    """Drop the oldest turns, then cut the last one, until the rendered prompt fits ``budget``.

    The system prompt is always kept and the newest turn is never dropped.  Turns go in
    user/assistant pairs, so the kept history never starts with an assistant turn, which
    strict-alternation templates (Llama 2, Mistral, Gemma) reject.  Each step renders and
    counts the real prompt, so template overhead is measured, not guessed.
    """
    head = [system] if system is not None else []

    async def measure(messages: Sequence[ChatMessage]) -> tuple[str, int]:
        prompt = render([*head, *messages])
        return prompt, await count(prompt)

    starts = [i for i, turn in enumerate(turns) if turn.role != "assistant"] or [max(len(turns) - 1, 0)]
    prompt, tokens = await measure(turns[starts[0] :])
    if tokens <= budget or not turns:
        return _checked(prompt, tokens, budget, starts[0], False)
    start = await _first_fitting_start(turns, starts, measure, budget)
    prompt, tokens = await measure(turns[start:])
    if tokens <= budget:
        return FittedPrompt(prompt, tokens, start, False)
    # Only the newest turn is left and it alone is too long: keep its beginning.
    last = turns[-1]
    keep = await _longest_fitting_prefix(last, measure, budget)
    prompt, tokens = await measure([ChatMessage(last.role, last.content[:keep] + CUT_NOTE)])
    return _checked(prompt, tokens, budget, len(turns) - 1, True)


async def _first_fitting_start(
    turns: Sequence[ChatMessage],
    starts: Sequence[int],
    measure: Callable[[Sequence[ChatMessage]], Awaitable[tuple[str, int]]],
    budget: int,
) -> int:
    """Smallest start in ``starts`` such that turns[start:] fits, else the last start (binary search)."""
    high = len(starts) - 1
    low = min(1, high)  # starts[0] is already known not to fit
    while low < high:
        middle = (low + high) // 2
        if (await measure(turns[starts[middle] :]))[1] <= budget:
            high = middle
        else:
            low = middle + 1
    return starts[low]


async def _longest_fitting_prefix(
    message: ChatMessage,
    measure: Callable[[Sequence[ChatMessage]], Awaitable[tuple[str, int]]],
    budget: int,
) -> int:
    """Longest prefix length of ``message`` that fits together with the cut note."""
    low, high = 0, len(message.content)
    while low < high:
        middle = (low + high + 1) // 2
        cut = ChatMessage(message.role, message.content[:middle] + CUT_NOTE)
        if (await measure([cut]))[1] <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _checked(prompt: str, tokens: int, budget: int, dropped: int, cut: bool) -> FittedPrompt:
    if tokens > budget:
        raise ContextTooSmall(
            f"The prompt needs {tokens} tokens but only {budget} fit: "
            "shorten the system prompt, lower BOT_MAX_NEW_TOKENS or raise BOT_CONTEXT_SIZE."
        )
    return FittedPrompt(prompt, tokens, dropped, cut)
