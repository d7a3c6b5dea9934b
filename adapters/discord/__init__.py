"""The Discord adapter: a discord.py bot that translates between Discord and the conversation core.

``serve`` runs it until a stop event is set; ``invite_url`` builds the link that adds
the bot to a server.
"""

from adapters.discord.client import DiscordOptions, DiscordStartError, serve
from adapters.discord.translate import invite_url

__all__ = ["DiscordOptions", "DiscordStartError", "invite_url", "serve"]
