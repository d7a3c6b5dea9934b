"""Where the core shows its output: one channel, thread, DM or command response on one platform.

An adapter implements ``Surface`` for each place it can answer; the core decides what to
say, when, and how it streams, so every platform behaves the same.
"""

from __future__ import annotations

import enum
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from bot.streaming import EditBudget, MessageSink


class Kind(enum.Enum):
    """What a message is, so each platform can render it in its own way."""

    REPLY = "reply"  # the model's Markdown
    INFO = "info"  # the bot's own plain text (command answers, failures)
    NOTICE = "notice"  # a small note under a reply
    PRIVATE = "private"  # the bot's plain text for the asker only, where the platform allows it


class SurfaceUnavailable(Exception):
    """The surface cannot show anything here and has already told the user why (the bot is not in a channel).

    The core logs it and adds no failure text of its own.
    """


@dataclass(frozen=True)
class Pacing:
    """How fast and how long: one edit budget shared by a platform's replies, and its message length limit."""

    budget: EditBudget
    message_limit: int


# For surfaces without a platform's limits (a terminal, memory): every chunk shows at once, nothing is split.
UNPACED = Pacing(EditBudget(per_message_interval=0.0, edits_per_second=1e9), message_limit=1_000_000)


class Surface(Protocol):
    """Posts, edits and shows a busy indicator in one place on a platform.

    ``send`` and ``edit`` may raise the platform's errors; the core handles them.
    ``indicate`` is cosmetic: an implementation logs and swallows its own failures.
    """

    @property
    def pacing(self) -> Pacing:
        """The platform's edit budget and message length limit."""

    async def send(self, text: str, kind: Kind) -> object:
        """Post a new message and return a handle to edit it later."""

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        """Replace the text of a message posted by ``send``."""

    def indicate(self, kind: Kind) -> AbstractAsyncContextManager[object]:
        """Show that the bot is working on an answer of ``kind`` (typing, thinking) while the block runs."""

    async def finish(self, *, complete: bool) -> None:
        """The model's reply posted here has ended: ``complete``, or cut short (a failure, a stop).

        A platform closes here what a reply keeps open (Slack's native stream) and adds what only a
        finished answer gets (feedback buttons); most surfaces have nothing to do.
        """


class KindSink(MessageSink[object]):
    """A surface seen as the message sink of one kind of text (streaming posts and edits plain text)."""

    def __init__(self, surface: Surface, kind: Kind) -> None:
        self._surface = surface
        self._kind = kind

    async def send(self, text: str) -> object:
        return await self._surface.send(text, self._kind)

    async def edit(self, handle: object, text: str) -> None:
        await self._surface.edit(handle, text, self._kind)
