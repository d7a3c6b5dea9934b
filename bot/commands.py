"""The chat commands every surface understands, and the texts the core answers with."""

from __future__ import annotations

from dataclasses import dataclass

from bot.types import Incoming
from model.engine import ReplyStats

COMMANDS = frozenset({"help", "ask", "reset", "stats", "export", "persona", "summarize"})

HELP_TEXT = (
    "Talk to me and I answer with a local model. I read text files you attach, and "
    '"summarize" in a thread sums it up.\n'
    "/reset  forget this conversation\n"
    "/stats  speed of the last reply, the model, this channel's instructions and feedback\n"
    "/persona  this channel's instructions (admins: `/persona TEXT` sets them, `/persona reset`)\n"
    "/export re-export the model (admins; `/export help` for options)\n"
    "/help   this text"
)
ASK_USAGE = "Usage: /ask your question"
NOT_ADMIN = "Only the bot's admins can use /{command}."
STOPPING = "The bot is shutting down; try again in a moment."
FAILED = "Sorry, something went wrong while answering. Please try again."
NOTHING_TO_SUMMARIZE = (
    'There is nothing here for me to summarize: mention me with "summarize" in a thread, '
    'or use "Summarize this thread" on one of its messages.'
)
# The user turn a catch-up stores and asks: what was asked, as the asker would put it.
SUMMARY_ASK = "Summarize this thread: the main points, what was decided, and what is still open."
FILE_ONLY_ASK = "Please read the attached file."
PERSONA_LIMIT = 4000
PERSONA_SHOWN_IN_STATS = 200
PERSONA_SHOWN = "This channel's instructions (set by an admin):\n{prompt}"
PERSONA_DEFAULT = "This channel uses the bot's default instructions:\n{prompt}"
PERSONA_SET = "This channel's instructions are now:\n{prompt}"
PERSONA_RESET = "This channel is back to the default instructions."
PERSONA_TOO_LONG = "Instructions may be at most {limit} characters long (these are {length})."


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


def format_channel(persona: str | None, helpful: int, unhelpful: int) -> str:
    """The lines /stats adds about the channel: its instructions and how people rated the replies."""
    instructions = (
        f"own instructions: {shortened(persona, PERSONA_SHOWN_IN_STATS)}" if persona else "the default instructions"
    )
    return f"This channel uses {instructions}.\nFeedback on replies here: {helpful} helpful, {unhelpful} not helpful."


def shortened(text: str, limit: int) -> str:
    """``text`` on one line of at most ``limit`` characters, an ellipsis marking a cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def format_stats(stats: ReplyStats | None, model_name: str) -> str:
    """A one-line summary of the last reply's speed, or just the model when there is none."""
    if stats is None:
        return f"Model: {model_name}. No reply in this conversation yet."
    return (
        f"Model: {stats.model_name}. Last reply: time to first token {stats.ttft_s * 1000:.0f} ms, "
        f"{stats.tokens_per_s:.1f} tokens/s, {stats.prompt_tokens} prompt tokens, "
        f"{stats.generated_tokens} generated."
    )


CHAT_COMMANDS = (None, "ask", "summarize")


def question_of(message: Incoming, command: Command) -> str:
    """What the model is asked: the text, a summary of the discussion handed over, or a file sent alone."""
    if command.name == "summarize":
        return (command.argument or SUMMARY_ASK) if message.context else ""
    return command.argument or (FILE_ONLY_ASK if message.attachments else "")


def answer_without_question(command: Command) -> str:
    """The answer to a chat message with nothing to ask."""
    return {None: HELP_TEXT, "ask": ASK_USAGE}.get(command.name, NOTHING_TO_SUMMARIZE)


def kept_for_restart(message: Incoming, command: Command) -> bool:
    """Whether the inbox keeps ``message`` to answer after a restart: chat, without files or a thread to read.

    Files and threads are read through the platform when the message arrives; a restart asks for it again.
    """
    return command.name in CHAT_COMMANDS and bool(command.argument) and not (message.attachments or message.context)


# What a restart tells the people whose messages it cut short or left unanswered.
RESTARTED_NOTE = "The bot restarted before answering this message; answering it now."
RESTARTING = "The bot is restarting; it will answer this message when it is back."
RESTARTING_ASK_AGAIN = "The bot is restarting; please ask again in a minute."
ASK_AGAIN = "The bot restarted and this message is too old to answer now; please ask again."
SEND_AGAIN = (
    "The bot restarted before answering this message; please send it again "
    "(files and threads are read when a message arrives)."
)
