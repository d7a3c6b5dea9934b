"""Harnesses for the adapters without a network: in memory and the console on a fake terminal."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from adapters.console import ConsoleAdapter
from adapters.memory import MemoryAdapter, MemorySurface
from bot.core import Core
from bot.types import Identity, Incoming
from tests.behaviour.harness import MEMBER, Harness, SubmitCounter, wait_until


class MemoryHarness:
    """The in-memory adapter, serving until stopped."""

    platform = "memory"

    def __init__(self, core: Core) -> None:
        self.adapter = MemoryAdapter(core)
        self.stop = asyncio.Event()
        self.serving = asyncio.create_task(self.adapter.serve(core, self.stop))

    async def message(self, text: str, *, user: str = MEMBER, addressed: bool = True) -> list[str]:
        return [post.text for post in await self.adapter.posts(text, user=user, addressed=addressed)]

    async def command(self, name: str, argument: str = "", *, user: str = MEMBER) -> list[str]:
        return await self.message(f"/{name} {argument}".strip(), user=user)

    async def stop_while_answering(self, text: str) -> list[str]:
        surface = MemorySurface()
        author = Identity(self.adapter.platform, MEMBER)
        answering = self.adapter.core.submit(Incoming(self.adapter.key(), author, text), surface)
        await wait_until(lambda: surface.posts)
        self.stop.set()
        await self.serving
        await answering
        return [post.text for post in surface.posts]


class ConsoleHarness:
    """The console REPL reading typed lines from a queue and writing to a buffer."""

    platform = "console"

    def __init__(self, core: Core) -> None:
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.output = io.StringIO()
        self.adapter = ConsoleAdapter(self.output, user=MEMBER, reader=self._read)
        self.counter = SubmitCounter(core)
        self.stop = asyncio.Event()
        self.serving = asyncio.create_task(self.adapter.serve(core, self.stop))

    async def _read(self, prompt: str) -> str | None:
        return await self.lines.get()

    async def message(self, text: str, *, user: str = MEMBER, addressed: bool = True) -> list[str]:
        if not addressed:
            pytest.skip("every line typed at the console is for the bot")
        if not text:
            pytest.skip("the console has no mention: an empty line is nothing typed")
        self.adapter.user = user
        before, start = self.counter.count, len(self.output.getvalue())
        await self.lines.put(text)
        await self.counter.settled(before)
        return self._shown_since(start)

    async def command(self, name: str, argument: str = "", *, user: str = MEMBER) -> list[str]:
        return await self.message(f"/{name} {argument}".strip(), user=user)

    async def stop_while_answering(self, text: str) -> list[str]:
        start = len(self.output.getvalue())
        await self.lines.put(text)
        await wait_until(lambda: "bot> " in self.output.getvalue()[start:])
        self.stop.set()
        await self.serving
        return self._shown_since(start)

    def _shown_since(self, start: int) -> list[str]:
        shown = self.output.getvalue()[start:]
        return [line.removeprefix("bot> ") for line in shown.splitlines() if line.strip()]


@asynccontextmanager
async def memory_harness(core: Core) -> AsyncIterator[Harness]:
    """The in-memory adapter over ``core``."""
    harness = MemoryHarness(core)
    try:
        yield harness
    finally:
        harness.stop.set()
        await harness.serving


@asynccontextmanager
async def console_harness(core: Core) -> AsyncIterator[Harness]:
    """The console adapter over ``core``."""
    harness = ConsoleHarness(core)
    try:
        yield harness
    finally:
        await harness.lines.put(None)  # end of input
        await harness.serving
