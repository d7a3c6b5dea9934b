"""An in-memory adapter: whole-bot tests in one line each (in the spirit of errbot's)."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from bot.core import Core
from bot.surface import UNPACED, Kind
from bot.types import Attachment, ConversationKey, Identity, Incoming, Said


@dataclass
class Post:
    """One message the bot showed, with every version of its text (the last is what stays)."""

    kind: Kind
    versions: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text as it ends up."""
        return self.versions[-1]


class MemorySurface:
    """A channel in memory: records every post and edit."""

    pacing = UNPACED

    def __init__(self) -> None:
        self.posts: list[Post] = []

    async def send(self, text: str, kind: Kind) -> object:
        self.posts.append(Post(kind, [text]))
        return len(self.posts) - 1

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        assert isinstance(handle, int)
        self.posts[handle].versions.append(text)

    def indicate(self, kind: Kind) -> AbstractAsyncContextManager[object]:
        return contextlib.nullcontext()

    async def finish(self, *, complete: bool) -> None:
        """Nothing stays open after a reply here."""


class MemoryAdapter:
    """Sends messages straight to the core and returns what the bot would post."""

    platform = "memory"

    def __init__(self, core: Core, user: str = "tester") -> None:
        self.core = core
        self.user = user

    async def serve(self, core: Core, stop: asyncio.Event) -> None:
        """Nothing to connect: wait for ``stop``, then let the core drain."""
        self.core = core
        await stop.wait()
        await core.drain()

    def key(self, channel: str = "general", thread: str | None = None) -> ConversationKey:
        """The conversation key a message in ``channel``/``thread`` belongs to."""
        return ConversationKey(self.platform, channel, thread)

    async def posts(
        self,
        text: str,
        channel: str = "general",
        thread: str | None = None,
        *,
        user: str | None = None,
        name: str = "",
        addressed: bool = True,
        command: str | None = None,
        attachments: tuple[Attachment, ...] = (),
        context: tuple[Said, ...] = (),
    ) -> list[Post]:
        """Post ``text`` (as ``user``, shown as ``name``) and return everything the bot showed in answer.

        A message not ``addressed`` to the bot is chatter among users: it never reaches the core.
        ``attachments`` are files sent with it; ``context`` a discussion it asks about (a catch-up).
        """
        surface = MemorySurface()
        if not addressed:
            return surface.posts
        author = Identity(self.platform, user or self.user, name=name)
        message = Incoming(
            self.key(channel, thread), author, text, command=command, attachments=attachments, context=context
        )
        await self.core.submit(message, surface)
        return surface.posts

    async def say(self, text: str, channel: str = "general", thread: str | None = None) -> str:
        """Post ``text`` and return the bot's whole answer."""
        return "\n".join(post.text for post in await self.posts(text, channel, thread))

    async def chunks(self, text: str, channel: str = "general", thread: str | None = None) -> list[str]:
        """Post ``text`` and return the answer's text as it grew, one piece per update shown."""
        posts = await self.posts(text, channel, thread)
        reply = next(post for post in posts if post.kind is Kind.REPLY)
        return [now[len(before) :] for before, now in zip(["", *reply.versions], reply.versions, strict=False)]
