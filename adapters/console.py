"""The console adapter: a streaming REPL (`bot chat`) and one-shot answers (`bot ask`)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TextIO

from bot.core import Core
from bot.surface import UNPACED, Kind, Pacing
from bot.types import ConversationKey, Identity, Incoming

CONSOLE_KEY = ConversationKey("console", "local")
ASK_KEY = ConversationKey("console", "ask")
GREETING = "Chatting with {model}. /help lists commands, /quit or Ctrl-D leaves, Ctrl-C stops a reply."
QUIT_WORDS = frozenset({"/quit", "/exit"})

LineReader = Callable[[str], Awaitable[str | None]]


async def read_line(prompt: str) -> str | None:
    """Read one line from stdin without blocking the loop; ``None`` at end of input.

    A daemon thread per line: a thread blocked in input() must never keep the
    process alive after the user quits.
    """
    loop = asyncio.get_running_loop()
    result: asyncio.Future[str | None] = loop.create_future()

    def worker() -> None:
        try:
            line: str | None = input(prompt)
        except EOFError:
            line = None
        loop.call_soon_threadsafe(_resolve, result, line)

    threading.Thread(target=worker, daemon=True).start()
    return await result


def _resolve(future: asyncio.Future[str | None], line: str | None) -> None:
    if not future.done():  # the prompt may have been abandoned meanwhile
        future.set_result(line)


class ConsoleSurface:
    """The terminal: a reply streams onto a ``bot>`` line; the bot's own text goes to ``info`` (stdout by default)."""

    pacing: Pacing = UNPACED

    def __init__(self, output: TextIO, info: TextIO | None = None) -> None:
        self._output = output
        self._info = info or output
        self._shown: dict[int, str] = {}
        self._line_open = False
        self.replied = False

    async def send(self, text: str, kind: Kind) -> object:
        self.end_line()
        if kind is Kind.REPLY:
            self._write(self._output, "bot> " + text)
            self._line_open = self.replied = True
        else:
            self._write(self._info, f"({text})\n" if kind is Kind.NOTICE else text + "\n")
        handle = len(self._shown)
        self._shown[handle] = text
        return handle

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        assert isinstance(handle, int)
        before = self._shown[handle]
        # Streamed text only grows, so printing what is new is the edit; anything else starts over.
        addition = text[len(before) :] if text.startswith(before) else "\n" + text
        self._write(self._output if kind is Kind.REPLY else self._info, addition)
        self._shown[handle] = text

    def indicate(self, kind: Kind) -> AbstractAsyncContextManager[object]:
        return contextlib.nullcontext()

    async def finish(self, *, complete: bool) -> None:
        """Nothing stays open after a reply here."""

    def end_line(self) -> None:
        """Finish a reply's line, so that what follows starts on its own."""
        if self._line_open:
            self._write(self._output, "\n")
            self._line_open = False

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text)
        stream.flush()


async def answer_once(core: Core, question: str, output: TextIO, errors: TextIO) -> bool:
    """Answer one question (no history kept between calls); the bot's own text goes to ``errors``.

    Returns whether the model answered, so `bot ask` can exit non-zero when it did not.
    """
    surface = ConsoleSurface(output, info=errors)
    await core.submit(Incoming(ASK_KEY, Identity("console", getpass.getuser()), question), surface)
    surface.end_line()
    return surface.replied


class ConsoleAdapter:
    """The interactive REPL: Ctrl-C stops the reply in progress, or quits at the prompt."""

    platform = "console"

    def __init__(self, output: TextIO, *, user: str | None = None, reader: LineReader = read_line) -> None:
        self.user = user or getpass.getuser()
        self._surface = ConsoleSurface(output)
        self._output = output
        self._read = reader
        self._current: asyncio.Task[None] | None = None
        self._quit = asyncio.Event()

    async def serve(self, core: Core, stop: asyncio.Event) -> None:
        """Read, answer, repeat until /quit, end of input, Ctrl-C at the prompt or ``stop``."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        self._output.write(GREETING.format(model=core.manager.model_name) + "\n")
        try:
            while not (self._quit.is_set() or stop.is_set()):
                line = await self._next_line(stop)
                if line is None or line.strip() in QUIT_WORDS:
                    break
                if line.strip():
                    await self._answer(core, line)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            await core.drain()

    async def _next_line(self, stop: asyncio.Event) -> str | None:
        reading = asyncio.ensure_future(self._read("you> "))
        waits = {asyncio.ensure_future(self._quit.wait()), asyncio.ensure_future(stop.wait())}
        done, _ = await asyncio.wait({reading, *waits}, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        return reading.result() if reading in done else None

    async def _answer(self, core: Core, line: str) -> None:
        author = Identity(self.platform, self.user)
        self._current = task = core.submit(Incoming(CONSOLE_KEY, author, line), self._surface)
        try:
            await asyncio.wait({task})  # a Ctrl-C cancels the task, not this loop
        finally:
            self._current = None
            self._surface.end_line()
        if task.cancelled():
            self._output.write("(stopped)\n")

    def _interrupt(self) -> None:
        if self._current is not None and not self._current.done():
            self._current.cancel()
        else:
            self._quit.set()
