"""`bot run` as a real subprocess: started with its own environment, probed over /healthz and /metrics, stopped.

Its stderr goes to a file (a pipe nobody reads would fill up and stall a busy bot), whose tail a failing
test prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import aiohttp

from entry.llama_server import free_port

T = TypeVar("T")
STOP_LIMIT_S = 60.0
READY_LIMIT_S = 120.0
_MESSAGES = re.compile(r"^bot_messages_total\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class BotProcess:
    """One running `bot run`, its metrics port and the file its stderr goes to."""

    name: str
    process: asyncio.subprocess.Process
    metrics_port: int
    log: Path

    @property
    def base_url(self) -> str:
        """Where its /healthz and /metrics are served."""
        return f"http://127.0.0.1:{self.metrics_port}"

    def tail(self, chars: int = 4000) -> str:
        """The end of what it wrote to stderr, for a failure message."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.process.returncode}) stderr tail ---\n{text[-chars:]}"

    async def wait_ready(self, limit_s: float = READY_LIMIT_S) -> dict[str, object]:
        """Wait until /healthz answers 200 (model loaded, Slack connected); return its report."""

        async def until_ready() -> dict[str, object]:
            async with aiohttp.ClientSession() as http:
                while True:
                    assert self.process.returncode is None, f"{self.name} exited while starting\n{self.tail()}"
                    with contextlib.suppress(aiohttp.ClientConnectionError):  # not listening yet: still loading
                        async with http.get(f"{self.base_url}/healthz") as response:
                            if response.status == 200:
                                report: dict[str, object] = await response.json()
                                return report
                    await asyncio.sleep(0.2)

        return await asyncio.wait_for(until_ready(), limit_s)

    async def answered(self) -> dict[str, float]:
        """Its own count of Slack messages by outcome, from its /metrics."""
        async with aiohttp.ClientSession() as http, http.get(f"{self.base_url}/metrics") as response:
            assert response.status == 200, f"{self.name} /metrics: HTTP {response.status}"
            text = await response.text()
        counts: dict[str, float] = {}
        for labels, count in _MESSAGES.findall(text):
            named = dict(_LABEL.findall(labels))
            if named.get("platform") == "slack":
                counts[named["outcome"]] = float(count)
        return counts

    async def stop(self) -> int:
        """SIGTERM, then wait for it to exit; return its exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), STOP_LIMIT_S)


async def start_bot(name: str, env: dict[str, str], workdir: Path) -> BotProcess:
    """Start `bot run` (``python -m entry run``) with ``env`` plus its own data directory and metrics port."""
    data = workdir / name
    data.mkdir(parents=True)
    port = free_port()
    log = workdir / f"{name}.stderr"
    own = {**env, "BOT_DATA_DIR": str(data / "data"), "BOT_METRICS_PORT": str(port)}
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "entry",
            "run",
            env=own,
            cwd=data,  # no .env of the developer's is read
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
        )
    return BotProcess(name, process, port, log)


@contextlib.asynccontextmanager
async def bots(names: list[str], env: dict[str, str], workdir: Path) -> AsyncIterator[list[BotProcess]]:
    """Several `bot run` processes started together; any still running at the end is killed."""
    started: list[BotProcess] = []
    try:
        for name in names:
            started.append(await start_bot(name, env, workdir))
        yield started
    finally:
        for bot in started:
            if bot.process.returncode is None:
                bot.process.kill()
                await bot.process.wait()


async def while_running(processes: list[BotProcess], work: Awaitable[T]) -> T:
    """Await ``work``, failing at once (with its stderr tail) if one of ``processes`` exits first."""
    task = asyncio.ensure_future(work)
    exits = {asyncio.ensure_future(bot.process.wait()): bot for bot in processes}
    try:
        await asyncio.wait({task, *exits}, return_when=asyncio.FIRST_COMPLETED)
        for exited, bot in exits.items():
            assert not exited.done() or task.done(), f"{bot.name} exited while serving\n{bot.tail()}"
        return await task
    finally:
        task.cancel()
        for exited in exits:
            exited.cancel()


def base_env(**values: str) -> dict[str, str]:
    """This environment without any bot or platform setting, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "DISCORD_", "SLACK_"))}
    env.update(values)
    return env
