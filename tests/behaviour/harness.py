"""The interface every adapter's test harness offers, so one behaviour suite runs against them all.

A harness runs the real adapter (against its platform stand-in, a console on pipes,
or in memory) over a ``Core`` the suite builds, plays users, and reports what the
bot showed.  ``ADMIN`` and ``MEMBER`` are the two users; each harness maps them to
its platform's ids, listed as ``ADMIN_IDS`` for the core's ``AdminPolicy``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from bot.core import Core

ADMIN = "admin"
MEMBER = "member"
# The admin of each platform, as the harnesses name them to the platform.
ADMIN_IDS = {"memory": ["admin"], "console": ["admin"], "discord": ["111000111"], "slack": ["UADMIN001"]}
# How long a harness waits for an answer that should come, and for silence after one that should not.
ANSWER_TIMEOUT_S = 120.0
QUIET_S = 0.5


class Harness(Protocol):
    """A running adapter, driven as its users would drive it."""

    platform: str

    async def message(self, text: str, *, user: str = MEMBER, addressed: bool = True) -> list[str]:
        """Post ``text`` as ``user`` where the bot listens (mentioning it when ``addressed``).

        Returns the final text of every message the bot showed in answer, in order
        (an edited message counts once, as it ends up), once the core is idle again.
        """

    async def command(self, name: str, argument: str = "", *, user: str = MEMBER) -> list[str]:
        """Use the platform's own command ``name`` (a slash command; typed ``/name`` where there is none)."""

    async def stop_while_answering(self, text: str) -> list[str]:
        """Post ``text``, stop the adapter once the answer is streaming, wait for ``serve`` to return.

        Returns the final texts the bot showed by then.
        """


class SubmitCounter:
    """Counts ``Core.submit`` calls, so a harness knows when an answer it caused has finished."""

    def __init__(self, core: Core) -> None:
        self.count = 0
        submit = core.submit

        def counted(*args: object, **kwargs: object) -> asyncio.Task[None]:
            self.count += 1
            return submit(*args, **kwargs)  # type: ignore[arg-type]

        core.submit = counted  # type: ignore[method-assign]
        self._core = core

    async def settled(self, before: int, *, expect_answer: bool = True) -> None:
        """Wait until a submit happened after ``before`` and the core is idle; or, expecting none, stay quiet."""
        if not expect_answer:
            await asyncio.sleep(QUIET_S)
            assert self.count == before, "the bot answered a message it should ignore"
            return
        await wait_until(lambda: self.count > before and self._core.in_flight == 0)


async def wait_until(condition: Callable[[], object], limit_s: float = ANSWER_TIMEOUT_S) -> None:
    """Poll ``condition`` until it holds (``TimeoutError`` after ``limit_s`` seconds)."""
    async with asyncio.timeout(limit_s):
        # The core's counters have no event to wait on, and a 20 ms poll costs nothing here.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
