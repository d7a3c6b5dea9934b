"""Whole-bot answers from the real bundled model."""

from __future__ import annotations

from adapters.memory import MemoryAdapter


async def test_capital_of_france(bot: MemoryAdapter) -> None:
    assert "Paris" in await bot.say("What is the capital of France?")
