"""Where the core's answers appear on Discord: a channel (thread, DM) or a slash command's response."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import discord

from adapters.discord.translate import NO_MENTIONS, render
from bot.surface import Kind, Pacing

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]


class ChannelSurface:
    """A channel, thread or DM answering one message: the first post replies to it (no ping); PRIVATE posts too."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        reply_to: discord.Message | discord.PartialMessage | None,
        pacing: Pacing,
    ) -> None:
        self.pacing = pacing
        self._channel = channel
        self._reply_to = reply_to

    async def send(self, text: str, kind: Kind) -> discord.Message:
        """Post ``text``; only the first post of an answer is shown as a reply to the user's message."""
        reference = self._reply_to.to_reference(fail_if_not_exists=False) if self._reply_to else None
        self._reply_to = None
        if reference is None:
            return await self._channel.send(render(text, kind), allowed_mentions=NO_MENTIONS)
        return await self._channel.send(render(text, kind), allowed_mentions=NO_MENTIONS, reference=reference)

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        """Replace the text of a message ``send`` posted."""
        assert isinstance(handle, discord.Message)
        await handle.edit(content=render(text, kind), allowed_mentions=NO_MENTIONS)

    @contextlib.asynccontextmanager
    async def indicate(self, kind: Kind) -> AsyncIterator[None]:
        """Show "typing…" while the block runs; without it (an HTTP error) the answer comes anyway."""
        async with contextlib.AsyncExitStack() as typing:
            try:
                await typing.enter_async_context(self._channel.typing())
            except Exception as error:  # HTTP or network: the indicator is cosmetic
                log.warning("No typing indicator (%s); answering anyway", error)
            yield

    async def finish(self, *, complete: bool) -> None:
        """Nothing stays open after a reply here."""


# The handle of a command's original response, which is edited through the interaction itself.
_ORIGINAL = object()


class InteractionSurface:
    """A slash command's response: deferred ("thinking…") while the core works, then follow-ups; PRIVATE: ephemeral."""

    def __init__(self, interaction: Interaction, pacing: Pacing) -> None:
        self.pacing = pacing
        self._interaction = interaction

    async def send(self, text: str, kind: Kind) -> object:
        """Answer the command if nothing answered it yet, else post a follow-up."""
        content, ephemeral = render(text, kind), kind is Kind.PRIVATE
        response = self._interaction.response
        if not response.is_done():
            await response.send_message(content, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)
            return _ORIGINAL
        followup = self._interaction.followup
        return await followup.send(content, wait=True, ephemeral=ephemeral, allowed_mentions=NO_MENTIONS)

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        """Replace the text of the response or follow-up ``send`` posted."""
        content = render(text, kind)
        if handle is _ORIGINAL:
            await self._interaction.edit_original_response(content=content, allowed_mentions=NO_MENTIONS)
            return
        assert isinstance(handle, discord.WebhookMessage)
        await handle.edit(content=content, allowed_mentions=NO_MENTIONS)

    @contextlib.asynccontextmanager
    async def indicate(self, kind: Kind) -> AsyncIterator[None]:
        """Defer the response at once: Discord drops a command that gets no response within 3 s."""
        if not self._interaction.response.is_done():
            try:
                await self._interaction.response.defer(thinking=True, ephemeral=kind is Kind.PRIVATE)
            except Exception as error:  # HTTP or network: answering without the deferral may still work
                log.warning("Could not defer the command's response: %s", error)
        yield

    async def finish(self, *, complete: bool) -> None:
        """Nothing stays open after a reply here."""
