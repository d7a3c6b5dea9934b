"""The Discord adapter: ``DiscordAdapter(DiscordConfig(token)).serve(core, stop)``; ``invite_url`` adds the bot."""

from adapters.discord.client import DiscordAdapter, DiscordConfig, DiscordStartError
from adapters.discord.translate import invite_url

__all__ = ["DiscordAdapter", "DiscordConfig", "DiscordStartError", "invite_url"]
