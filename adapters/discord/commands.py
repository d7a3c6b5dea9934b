"""Slash commands: /ask, /reset, /stats and the admin-only /export."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

import discord
from discord import app_commands

from adapters.discord.replies import Answering, FollowupSink
from adapters.discord.translate import FAILED, NO_MENTIONS, PLATFORM, channel_key, is_admin
from bot.admin import AdminActions, audit_refusal
from bot.commands import run_command
from bot.manager import ConversationManager
from bot.streaming import split_message
from bot.types import ConversationKey

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]

NOT_ADMIN = "Only the bot's admins can do that."
STOPPING = "The bot is shutting down; try again in a moment."


def interaction_key(interaction: Interaction) -> ConversationKey:
    """The conversation a slash command was used in (a thread keeps its own)."""
    return channel_key(interaction.channel, interaction.channel_id or 0)


def _role_ids(user: discord.User | discord.Member) -> list[int]:
    return [role.id for role in user.roles] if isinstance(user, discord.Member) else []


class SlashCommands:
    """The handlers behind the slash commands; ``tree`` registers them on a client."""

    def __init__(
        self,
        manager: ConversationManager,
        admin: AdminActions,
        admin_ids: Collection[str],
        answering: Answering,
    ) -> None:
        self._manager = manager
        self._admin = admin
        self._admin_ids = admin_ids
        self._answering = answering

    async def ask(self, interaction: Interaction, prompt: str) -> None:
        """Defer at once (Discord allows 3 s), then stream the answer into follow-ups."""
        if await self._refuse_if_stopping(interaction):
            return
        # The place in the conversation's line is taken now, before the deferral's network call.
        reply = self._manager.reply(interaction_key(interaction), prompt)
        with self._answering.inflight.track():
            try:
                await interaction.response.defer(thinking=True)
            except BaseException:
                await reply.aclose()
                raise
            await self._answering.stream(reply, FollowupSink(interaction))

    async def reset(self, interaction: Interaction) -> None:
        """Forget this conversation (deferred: it waits for a reply in progress there)."""
        if await self._refuse_if_stopping(interaction):
            return
        # Started before the deferral so that it queues behind earlier messages only, not later ones.
        resetting = asyncio.ensure_future(run_command(self._manager, interaction_key(interaction), "/reset"))
        await interaction.response.defer(thinking=True)
        answer = await resetting
        await interaction.followup.send(answer or "", allowed_mentions=NO_MENTIONS)

    async def stats(self, interaction: Interaction) -> None:
        """Speed of the last reply here and the model in use, shown only to the asker."""
        answer = await run_command(self._manager, interaction_key(interaction), "/stats")
        await interaction.response.send_message(answer or "", ephemeral=True, allowed_mentions=NO_MENTIONS)

    async def export(self, interaction: Interaction, argument: str = "") -> None:
        """Re-export the model; admins only, checked here whatever Discord's permissions say."""
        user = interaction.user
        if not is_admin(user.id, _role_ids(user), self._admin_ids):
            audit_refusal(PLATFORM, str(user.id), "/export")
            await interaction.response.send_message(NOT_ADMIN, ephemeral=True, allowed_mentions=NO_MENTIONS)
            return
        if await self._refuse_if_stopping(interaction):
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = _ExportReport(interaction, self._answering.limit)
        with self._answering.inflight.track():
            outcome = await self._admin.export(f"{PLATFORM}:{user.id}", argument, report.progress)
        await report.outcome(outcome)

    async def on_error(self, interaction: Interaction, error: app_commands.AppCommandError) -> None:
        """Log a failed command and tell the user instead of leaving them 'thinking'."""
        name = interaction.command.name if interaction.command else "?"
        log.error("/%s failed", name, exc_info=error)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(FAILED, ephemeral=True, allowed_mentions=NO_MENTIONS)
            else:
                await interaction.response.send_message(FAILED, ephemeral=True, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.warning("could not tell the user that /%s failed", name)

    async def _refuse_if_stopping(self, interaction: Interaction) -> bool:
        if not self._answering.stopping:
            return False
        await interaction.response.send_message(STOPPING, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return True

    def tree(self, client: discord.Client) -> app_commands.CommandTree[discord.Client]:
        """A command tree for ``client`` holding these commands."""
        tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
        for command in _commands(self):
            tree.add_command(command)
        tree.error(self.on_error)
        return tree


class _ExportReport:
    """Shows an export's progress and outcome privately to the admin who asked.

    An interaction token lasts 15 minutes, less than some exports: progress that cannot
    be shown is dropped (it must never abort the export) and an outcome that cannot be
    shown is sent as a direct message instead.
    """

    def __init__(self, interaction: Interaction, limit: int) -> None:
        self._interaction = interaction
        self._limit = limit

    async def progress(self, line: str) -> None:
        try:
            await self._interaction.edit_original_response(content=self._parts(line)[0], allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:
            log.info("Export progress not shown: %s", error)

    async def outcome(self, text: str) -> None:
        parts = self._parts(text)
        try:
            await self._interaction.edit_original_response(content=parts[0], allowed_mentions=NO_MENTIONS)
            for part in parts[1:]:
                await self._interaction.followup.send(part, ephemeral=True, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException:
            log.info("The /export interaction can no longer be answered; sending the outcome by direct message")
            await self._direct_message(parts)

    async def _direct_message(self, parts: list[str]) -> None:
        try:
            for part in parts:
                await self._interaction.user.send(part, allowed_mentions=NO_MENTIONS)
        except discord.HTTPException as error:
            log.warning(
                "Could not tell %s the export outcome (%s); it is in the audit log", self._interaction.user.id, error
            )

    def _parts(self, text: str) -> list[str]:
        return split_message(text, self._limit) or ["…"]


def _commands(handlers: SlashCommands) -> list[app_commands.Command[Any, ..., None]]:
    # discord.py reads option names and types from each callback's signature.
    @app_commands.command(name="ask", description="Ask the bot; the answer streams in as it is written.")
    @app_commands.describe(prompt="Your question or message")
    async def ask(interaction: Interaction, prompt: str) -> None:
        await handlers.ask(interaction, prompt)

    @app_commands.command(name="reset", description="Forget this conversation.")
    async def reset(interaction: Interaction) -> None:
        await handlers.reset(interaction)

    @app_commands.command(name="stats", description="Speed of the last reply and the model in use.")
    async def stats(interaction: Interaction) -> None:
        await handlers.stats(interaction)

    @app_commands.command(name="export", description="Admins: re-export the model.")
    @app_commands.describe(argument="SOURCE [--option VALUE ...], or help; empty: the default model and settings")
    @app_commands.default_permissions(manage_guild=True)
    async def export(interaction: Interaction, argument: str = "") -> None:
        await handlers.export(interaction, argument)

    return [ask, reset, stats, export]
