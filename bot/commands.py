"""Chat commands every adapter understands: /help, /reset, /stats."""

from __future__ import annotations

from bot.manager import ConversationManager, Reply
from bot.types import ConversationKey, ReplyStats

HELP_TEXT = (
    "Talk to me and I answer with a local model.\n"
    "/reset  forget this conversation\n"
    "/stats  speed of the last reply and the model in use\n"
    "/export re-export the model (admins; `/export help` for options)\n"
    "/help   this text"
)


def format_stats(stats: ReplyStats | None, model_name: str) -> str:
    """A one-line summary of the last reply's speed, or just the model when there is none."""
    if stats is None:
        return f"Model: {model_name}. No reply in this conversation yet."
    return (
        f"Model: {stats.model_name}. Last reply: time to first token {stats.ttft_s * 1000:.0f} ms, "
        f"{stats.tokens_per_s:.1f} tokens/s, {stats.prompt_tokens} prompt tokens, "
        f"{stats.generated_tokens} generated."
    )


async def run_command(manager: ConversationManager, key: ConversationKey, text: str) -> str | None:
    """Answer ``text`` if it is a known command; ``None`` if it is ordinary chat."""
    command = text.strip().split(maxsplit=1)[0].lower() if text.strip() else ""
    if command == "/help":
        return HELP_TEXT
    if command == "/reset":
        removed = await manager.reset(key)
        return f"Conversation forgotten ({removed} messages)."
    if command == "/stats":
        return format_stats(manager.last_stats(key), manager.model_name)
    return None


async def dispatch(manager: ConversationManager, key: ConversationKey, text: str) -> str | Reply:
    """What every adapter does with an incoming message: a command's answer or a streamed reply."""
    answer = await run_command(manager, key, text)
    return answer if answer is not None else manager.reply(key, text)
