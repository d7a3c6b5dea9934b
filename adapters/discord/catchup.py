"""Catch-up on Discord: read a discussion the bot may never have been part of, and hand it to the core.

"Summarize this thread" and "Ask about this" (message context-menu commands) and a typed
"summarize" mention in a thread read, through the REST API, the thread the message is in, else
its reply chain, else the channel's recent messages up to it; then make one ``core.submit``
with the messages as ``context``.  What is asked, how much fits and what is said about it
are the core's; this module only reads and translates.  It reads only for a person who may
read the channel's history themselves, and only when Discord gives the bot messages' text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from functools import partial
from typing import Any, TypeVar

import aiohttp
import discord

from adapters.discord.surfaces import ChannelSurface, Interaction, InteractionSurface
from adapters.discord.translate import conversation_key, identity, said
from bot.core import Core
from bot.surface import Kind, Pacing
from bot.types import Incoming, Said

log = logging.getLogger(__name__)

T = TypeVar("T")

SUMMARIZE = "Summarize this thread"
ASK_ABOUT = "Ask about this"
CANNOT_READ = (
    "I cannot read the messages here: I need the View Channel and Read Message History permissions in this channel."
)
READ_FAILED = "I could not read the discussion from Discord; please try again in a moment."
ASKER_CANNOT_READ = (
    "I only sum up messages you may read yourself: you need the View Channel and Read Message History "
    "permissions in this channel."
)
NEEDS_CONTENT_INTENT = (
    "I cannot read a discussion: this bot runs without the Message Content Intent, so Discord sends me other "
    "people's messages without their text. Whoever runs the bot can enable 'Message Content Intent' in the "
    "Discord Developer Portal (https://discord.com/developers/applications, the bot's application, Bot, "
    "Privileged Gateway Intents), then restart the bot."
)
# Discord drops an interaction not answered within 3 s: a long read shows "thinking…" first.
DEFER_AFTER_S = 2.0
QUESTION_LIMIT = 4000  # Discord's most for a text input
MODAL_TIMEOUT_S = 900.0  # an interaction token lives 15 minutes; a modal never sent back is dropped then
# Why a discussion could not be read: Discord refused or failed, or the network did.
_READ_ERRORS = (discord.HTTPException, aiohttp.ClientError, TimeoutError)


class CatchUp:
    """The catch-up commands of one adapter: read what a message belongs to, then submit it to the core."""

    def __init__(self, core: Core, pacing: Pacing, max_messages: int, *, content_intent: bool) -> None:
        """``content_intent``: whether Discord sends the bot other people's messages with their text."""
        self._core = core
        self._pacing = pacing
        self._max_messages = max_messages
        self._content_intent = content_intent

    async def summarize(self, interaction: Interaction, message: discord.Message) -> None:
        """ "Summarize this thread" on ``message``: a summary of its discussion, posted as the command's response."""
        await self._submit(interaction, "", "summarize", message=message)

    async def ask_about(self, interaction: Interaction, message: discord.Message) -> None:
        """ "Ask about this" on ``message``: a form for the question, answered once it is sent."""
        refusal = self._refusal(_invoker_permissions(interaction))
        if refusal is not None:  # before the form: no question typed in vain
            await InteractionSurface(interaction, self._pacing).send(refusal, Kind.PRIVATE)
            return
        await interaction.response.send_modal(QuestionForm(partial(self._submit, message=message, command=None)))

    async def thread_before(self, message: discord.Message, surface: ChannelSurface) -> tuple[Said, ...] | None:
        """The thread of a typed "summarize" mention, before it; ``None`` (and the asker told) when unreadable."""
        refusal = self._refusal(_author_permissions(message))
        if refusal is not None:
            await surface.send(refusal, Kind.PRIVATE)
            return None
        try:
            return await read_thread(message.channel, self._max_messages, before=message)
        except _READ_ERRORS as error:
            await surface.send(_unreadable(error, message.channel.id), Kind.PRIVATE)
            return None

    def _refusal(self, asker: discord.Permissions | None) -> str | None:
        """Why this catch-up must not read the discussion, or ``None``; ``asker`` is ``None`` where unknown (a DM)."""
        if not self._content_intent:  # every text would come back empty: "nothing to summarize" would mislead
            return NEEDS_CONTENT_INTENT
        if asker is not None and not (asker.view_channel and asker.read_message_history):
            # The answer is public: it must not show anyone earlier messages they may not read.
            log.info("Catch-up refused: the asker may not read the channel's history")
            return ASKER_CANNOT_READ
        return None

    async def _submit(
        self, interaction: Interaction, question: str = "", command: str | None = None, *, message: discord.Message
    ) -> None:
        surface = InteractionSurface(interaction, self._pacing)
        refusal = self._refusal(_invoker_permissions(interaction))
        if refusal is not None:
            await surface.send(refusal, Kind.PRIVATE)
            return
        try:
            channel = await _channel_of(interaction, message)
            context = await _read_in_time(interaction, discussion(channel, message, self._max_messages))
        except _READ_ERRORS as error:
            await surface.send(_unreadable(error, message.channel.id), Kind.PRIVATE)
            return
        key = conversation_key(interaction.channel, interaction.channel_id or 0)
        incoming = Incoming(key, identity(interaction.user), question, command=command, context=context)
        self._core.submit(incoming, surface)


class QuestionForm(discord.ui.Modal, title=ASK_ABOUT):
    """ "Ask about this": one text box for the question; sending it calls ``answer(interaction, question)``."""

    def __init__(self, answer: Callable[[Interaction, str], Awaitable[None]]) -> None:
        super().__init__(timeout=MODAL_TIMEOUT_S)
        self._answer = answer
        self._question: discord.ui.TextInput[QuestionForm] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph, max_length=QUESTION_LIMIT
        )
        self.add_item(discord.ui.Label(text="Your question about the discussion", component=self._question))

    async def on_submit(self, interaction: Interaction) -> None:
        """The question came back: read the discussion and answer it."""
        await self._answer(interaction, self._question.value)


async def discussion(channel: discord.abc.Messageable, message: discord.Message, limit: int) -> tuple[Said, ...]:
    """What ``message`` belongs to, oldest first: its thread, else its reply chain, else the channel up to it."""
    if isinstance(channel, discord.Thread):
        return await read_thread(channel, limit)
    reference = message.reference
    if reference is not None and reference.type is discord.MessageReferenceType.reply:
        return await read_reply_chain(channel, message, limit)
    earlier = [found async for found in channel.history(limit=limit - 1, before=message)] if limit > 1 else []
    return _oldest_first([message, *earlier])


async def read_thread(
    thread: discord.abc.Messageable, limit: int, *, before: discord.Message | None = None
) -> tuple[Said, ...]:
    """The newest ``limit`` messages of ``thread`` (before ``before``), oldest first."""
    return _oldest_first([message async for message in thread.history(limit=limit, before=before)])


async def read_reply_chain(channel: discord.abc.Messageable, message: discord.Message, limit: int) -> tuple[Said, ...]:
    """``message`` and the messages it replies to, one after another, up to ``limit``, oldest first."""
    chain = [message]
    async for earlier in _replied_to(channel, message):
        if len(chain) == limit:
            break
        chain.append(earlier)
    return _oldest_first(chain)


async def _replied_to(channel: discord.abc.Messageable, message: discord.Message) -> AsyncIterator[discord.Message]:
    """The message ``message`` replies to, the one that replies to, and so on, until a deleted one."""
    reference = message.reference
    while reference is not None and reference.type is discord.MessageReferenceType.reply and reference.message_id:
        # Discord sends the replied-to message along (one level deep); earlier ones are fetched.
        earlier = reference.resolved if isinstance(reference.resolved, discord.Message) else reference.cached_message
        if earlier is None and not isinstance(reference.resolved, discord.DeletedReferencedMessage):
            try:
                earlier = await channel.fetch_message(reference.message_id)
            except discord.NotFound:
                earlier = None
        if earlier is None:
            return
        yield earlier
        reference = earlier.reference


def _oldest_first(newest_first: list[discord.Message]) -> tuple[Said, ...]:
    """Messages fetched newest first, as the core reads a discussion: oldest first, system notices left out."""
    shown = [_shown(message) for message in reversed(newest_first) if not _is_notice(message)]
    return tuple(said(message) for message in shown)


def _is_notice(message: discord.Message) -> bool:
    return message.is_system() and message.type is not discord.MessageType.thread_starter_message


def _shown(message: discord.Message) -> discord.Message:
    """A thread's first message stands for the channel message it was started from: that one's text is shown."""
    starter = message.reference.resolved if message.reference else None
    if message.type is discord.MessageType.thread_starter_message and isinstance(starter, discord.Message):
        return starter
    return message


async def _channel_of(interaction: Interaction, message: discord.Message) -> discord.abc.Messageable:
    """The channel of a context menu's message; discord.py knows only its id when it is not cached."""
    channel = message.channel
    if not isinstance(channel, discord.PartialMessageable):
        return channel
    if interaction.channel is not None and interaction.channel.id == channel.id:
        return interaction.channel  # type: ignore[return-value]  # the interaction carries the full channel
    found = await interaction.client.fetch_channel(channel.id)
    return found if isinstance(found, discord.abc.Messageable) else channel


async def _read_in_time(interaction: Interaction, reading: Coroutine[Any, Any, T]) -> T:
    """``reading``'s result; if it takes long, the command's response is deferred meanwhile (in time for Discord)."""
    task = asyncio.ensure_future(reading)
    try:
        return await asyncio.wait_for(asyncio.shield(task), DEFER_AFTER_S)
    except TimeoutError:
        pass
    except BaseException:
        task.cancel()  # a no-op when the reading itself failed; stops it when this handler is cancelled
        raise
    if not interaction.response.is_done():
        try:
            await interaction.response.defer(thinking=True)
        except discord.HTTPException as error:  # answering without the deferral may still work
            log.warning("Could not defer a catch-up command: %s", error)
    return await task


def _invoker_permissions(interaction: Interaction) -> discord.Permissions | None:
    """What the command's user may do in its channel, overwrites included (Discord resolves them); none in a DM."""
    return interaction.permissions if interaction.guild_id is not None else None


def _author_permissions(message: discord.Message) -> discord.Permissions | None:
    """What ``message``'s author may do in its channel, where discord.py can tell (a server member, a known channel)."""
    channel, author = message.channel, message.author
    if not isinstance(author, discord.Member) or not isinstance(channel, discord.abc.GuildChannel | discord.Thread):
        return None
    try:
        return channel.permissions_for(author)
    except discord.ClientException:  # a thread whose parent channel is not cached
        return None


def _unreadable(error: Exception, channel_id: int) -> str:
    if isinstance(error, discord.Forbidden):
        log.info("Catch-up refused: no permission to read channel %s", channel_id)
        return CANNOT_READ
    log.warning("Could not read channel %s for a catch-up: %s", channel_id, error)
    return READ_FAILED
