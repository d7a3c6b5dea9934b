"""Unit tests of reply delivery (pure logic: fake reply, fake sink) and of the in-flight tracker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.discord.replies import InFlight, deliver
from bot.streaming import EditBudget


class FakeReply:
    """Yields fixed chunks, logging when it is asked for the first one and whether it was closed."""

    def __init__(self, chunks: list[str], log: list[str], notices: list[str] | None = None) -> None:
        self._chunks = chunks
        self._log = log
        self.notices = notices or []
        self.closed = False

    async def _run(self) -> AsyncIterator[str]:
        try:
            for chunk in self._chunks:
                self._log.append(f"chunk {chunk!r}")
                yield chunk
        finally:
            self.closed = True

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()


class LoggingSink:
    def __init__(self, log: list[str], fail_on_send: bool = False) -> None:
        self._log = log
        self._fail = fail_on_send
        self.messages: list[str] = []

    async def send(self, text: str) -> int:
        if self._fail:
            raise ConnectionError("Discord is down")
        self._log.append(f"send {text!r}")
        self.messages.append(text)
        return len(self.messages) - 1

    async def edit(self, handle: int, text: str) -> None:
        self._log.append(f"edit {text!r}")
        self.messages[handle] = text


def _typing(log: list[str]) -> Any:
    @contextlib.asynccontextmanager
    async def typing() -> AsyncIterator[None]:
        log.append("typing on")
        yield
        log.append("typing off")

    return typing


async def test_typing_runs_until_the_first_chunk_and_notices_come_last() -> None:
    log: list[str] = []
    reply = FakeReply(["Hel", "lo"], log, notices=["Your message was cut."])
    sink = LoggingSink(log)

    handles = await deliver(reply, sink, EditBudget(0.0, 100.0), 2000, _typing(log))  # type: ignore[arg-type]

    assert log[:3] == ["typing on", "chunk 'Hel'", "typing off"]
    assert log[3] == "send 'Hel'"
    assert sink.messages == ["Hello", "-# Your message was cut."]
    assert handles == [0]


async def test_a_failing_send_closes_the_reply() -> None:
    log: list[str] = []
    reply = FakeReply(["a", "b", "c"], log)

    with pytest.raises(ConnectionError):
        await deliver(reply, LoggingSink(log, fail_on_send=True), EditBudget(), 2000)  # type: ignore[arg-type]

    assert reply.closed and "chunk 'c'" not in log, "generation should stop when the reply cannot be shown"


async def test_drain_lets_quick_answers_finish_and_cancels_slow_ones() -> None:
    inflight = InFlight()
    finished: list[str] = []

    async def answer(name: str, seconds: float) -> None:
        with inflight.track():
            await asyncio.sleep(seconds)
            finished.append(name)

    tasks = [asyncio.create_task(answer("quick", 0.01)), asyncio.create_task(answer("slow", 30))]
    await asyncio.sleep(0)  # let both start
    assert len(inflight) == 2

    cancelled = await inflight.drain(grace_s=0.5)

    assert cancelled == 1 and finished == ["quick"]
    assert tasks[1].cancelled() and len(inflight) == 0
