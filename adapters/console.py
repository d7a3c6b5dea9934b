"""The console adapter: a streaming REPL (`bot chat`) and one-shot answers (`bot ask`)."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import threading
from collections.abc import Awaitable
from typing import TextIO

from bot.admin import AdminActions, NoAdminActions
from bot.commands import dispatch
from bot.manager import ConversationManager, Reply
from bot.trimming import ContextTooSmall
from bot.types import ConversationKey
from model.engine import EngineError

CONSOLE_KEY = ConversationKey("console", "local")
GREETING = "Chatting with {model}. /help lists commands, /quit or Ctrl-D leaves, Ctrl-C stops a reply."


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


async def stream_to(reply: Reply, output: TextIO) -> None:
    """Print a reply chunk by chunk as it is generated, then any notices."""
    async for chunk in reply:
        output.write(chunk)
        output.flush()
    output.write("\n")
    for notice in reply.notices:
        output.write(f"({notice})\n")
    output.flush()


async def answer_once(manager: ConversationManager, question: str, output: TextIO) -> None:
    """Answer one question (no history kept between calls)."""
    result = await dispatch(manager, ConversationKey("console", "ask"), question)
    if isinstance(result, str):
        output.write(result + "\n")
    else:
        await stream_to(result, output)


class ConsoleChat:
    """The interactive REPL: Ctrl-C stops the reply in progress, or quits at the prompt."""

    def __init__(self, manager: ConversationManager, output: TextIO, admin: AdminActions | None = None) -> None:
        self._manager = manager
        self._output = output
        self._admin = admin or NoAdminActions()
        self._current: asyncio.Task[None] | None = None
        self._quit = asyncio.Event()

    async def run(self) -> None:
        """Read, answer, repeat until /quit, end of input or Ctrl-C at the prompt."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        self._output.write(GREETING.format(model=self._manager.model_name) + "\n")
        try:
            while not self._quit.is_set():
                line = await self._next_line()
                if line is None or line.strip() in {"/quit", "/exit"}:
                    break
                if line.strip():
                    await self._answer(line)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)

    async def _next_line(self) -> str | None:
        reading = asyncio.ensure_future(read_line("you> "))
        quitting = asyncio.ensure_future(self._quit.wait())
        done, _ = await asyncio.wait({reading, quitting}, return_when=asyncio.FIRST_COMPLETED)
        quitting.cancel()
        return reading.result() if reading in done else None

    async def _answer(self, line: str) -> None:
        if line.split()[0] == "/export":
            work: Awaitable[None] = self._export(line.strip().removeprefix("/export").strip())
        else:
            result = await dispatch(self._manager, CONSOLE_KEY, line)
            if isinstance(result, str):
                self._output.write(result + "\n")
                return
            self._output.write("bot> ")
            work = stream_to(result, self._output)
        self._current = asyncio.ensure_future(work)
        try:
            await self._current
        except asyncio.CancelledError:
            self._output.write("\n(stopped)\n")
        except (EngineError, ContextTooSmall) as error:
            self._output.write(f"\n(error: {error})\n")
        finally:
            self._current = None

    async def _export(self, argument: str) -> None:
        # Whoever sits at the console owns the machine, so they are an admin.
        async def progress(line: str) -> None:
            self._output.write(f"[export] {line}\n")
            self._output.flush()

        result = await self._admin.export(f"console:{getpass.getuser()}", argument, progress)
        self._output.write(result + "\n")

    def _interrupt(self) -> None:
        if self._current is not None and not self._current.done():
            self._current.cancel()
        else:
            self._quit.set()
