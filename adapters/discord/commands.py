"""The bot's Discord application commands: slash commands handed to the core, and the catch-up context menus.

Registration only: each command becomes one core call (``submit``) or a catch-up (``CatchUp``);
what a command does is the core's.
"""

from __future__ import annotations

from collections.abc import Callable

import discord
from discord import app_commands

from adapters.discord.catchup import ASK_ABOUT, SUMMARIZE, CatchUp
from adapters.discord.surfaces import Interaction

CommandTree = app_commands.CommandTree[discord.Client]
Submit = Callable[[Interaction, str, str], None]


def command_tree(client: discord.Client, submit: Submit, catch_up: CatchUp) -> CommandTree:
    """/ask, /reset, /stats, /export and /persona, each handed to ``submit`` as (interaction, name, argument),
    and the message commands "Summarize this thread" and "Ask about this"."""
    tree: CommandTree = app_commands.CommandTree(client)
    for command in _slash_commands(submit):
        tree.add_command(command)

    # discord.py reads the target's type from the second parameter's annotation.
    async def summarize(interaction: Interaction, message: discord.Message) -> None:
        await catch_up.summarize(interaction, message)

    async def ask_about(interaction: Interaction, message: discord.Message) -> None:
        await catch_up.ask_about(interaction, message)

    tree.add_command(app_commands.ContextMenu(name=SUMMARIZE, callback=summarize))
    tree.add_command(app_commands.ContextMenu(name=ASK_ABOUT, callback=ask_about))
    return tree


def _slash_commands(submit: Submit) -> list[app_commands.Command[app_commands.Group, ..., None]]:
    # discord.py reads option names and types from each callback's signature.
    @app_commands.command(name="ask", description="Ask the bot; the answer streams in as it is written.")
    @app_commands.describe(prompt="Your question or message")
    async def ask(interaction: Interaction, prompt: str) -> None:
        submit(interaction, "ask", prompt)

    @app_commands.command(name="reset", description="Forget this conversation.")
    async def reset(interaction: Interaction) -> None:
        submit(interaction, "reset", "")

    @app_commands.command(name="stats", description="Speed of the last reply and the model in use.")
    async def stats(interaction: Interaction) -> None:
        submit(interaction, "stats", "")

    # Hidden from members without Manage Server by default; the core still checks the admin list.
    @app_commands.command(name="export", description="Admins: re-export the model.")
    @app_commands.describe(argument="SOURCE [--option VALUE ...], or help; empty: the default model and settings")
    @app_commands.default_permissions(manage_guild=True)
    async def export(interaction: Interaction, argument: str = "") -> None:
        submit(interaction, "export", argument)

    @app_commands.command(name="persona", description="This channel's instructions: show, set (admins) or reset.")
    @app_commands.describe(argument="New instructions, or reset for the default; empty: show them")
    @app_commands.default_permissions(manage_guild=True)
    async def persona(interaction: Interaction, argument: str = "") -> None:
        submit(interaction, "persona", argument)

    return [ask, reset, stats, export, persona]
