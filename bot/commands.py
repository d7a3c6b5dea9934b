"""The chat commands every surface understands, and the texts the core answers with."""

from __future__ import annotations

from dataclasses import dataclass

from bot.types import Incoming
from model.engine import ReplyStats

COMMANDS = frozenset({"help", "ask", "reset", "stats", "export"})

HELP_TEXT = (
    "Talk to me and I answer with a local model.\n"
    "/reset  forget this conversation\n"
    "/stats  speed of the last reply and the model in use\n"
    "/export re-export the model (admins; `/export help` for options)\n"
    "/help   this text"
)
ASK_USAGE = "Usage: /ask your question"
NOT_ADMIN = "Only the bot's admins can use /{command}."
STOPPING = "The bot is shutting down; try again in a moment."
FAILED = "Sorry, something went wrong while answering. Please try again."


@dataclass(frozen=True)
class Command:
    """What a message asks for: a command name (``None`` for chat) and its argument."""

    name: str | None
    argument: str


def parse(message: Incoming) -> Command:
    """The command in ``message``: the platform's own (slash) command, a typed ``/command``, or chat.

    A typed word after ``/`` that is no command of the bot is chat, so "/shrug" reaches the model.
    """
    if message.command is not None:
        return Command(message.command.strip().lstrip("/").lower(), message.text.strip())
    text = message.text.strip()
    words = text.split(maxsplit=1) if text.startswith("/") else [""]
    name = words[0][1:].lower()
    if name in COMMANDS:
        return Command(name, words[1] if len(words) > 1 else "")
    return Command(None, text)


def format_stats(stats: ReplyStats | None, model_name: str) -> str:
    """A one-line summary of the last reply's speed, or just the model when there is none."""
    if stats is None:
        return f"Model: {model_name}. No reply in this conversation yet."
    return (
        f"Model: {stats.model_name}. Last reply: time to first token {stats.ttft_s * 1000:.0f} ms, "
        f"{stats.tokens_per_s:.1f} tokens/s, {stats.prompt_tokens} prompt tokens, "
        f"{stats.generated_tokens} generated."
    )
