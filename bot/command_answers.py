"""The commands the core answers itself, without the model: /stats, /persona, /reset and /export."""

from __future__ import annotations

from bot.admin import AdminActions, AdminPolicy, audit, audit_refusal
from bot.commands import (
    NOT_ADMIN,
    PERSONA_DEFAULT,
    PERSONA_LIMIT,
    PERSONA_RESET,
    PERSONA_SET,
    PERSONA_SHOWN,
    PERSONA_TOO_LONG,
    format_channel,
    format_stats,
)
from bot.manager import ConversationManager
from bot.reply import PendingReset
from bot.streaming import LiveMessages
from bot.surface import Kind, KindSink, Surface
from bot.types import ConversationKey, Identity, Incoming

PROGRESS_LINES_SHOWN = 10


class CommandAnswers:
    """Answers the commands that need the history, the admin policy or the admin actions, but not the model."""

    def __init__(self, manager: ConversationManager, admins: AdminPolicy, actions: AdminActions) -> None:
        self._manager = manager
        self._admins = admins
        self._actions = actions

    async def stats(self, key: ConversationKey, surface: Surface) -> None:
        """/stats: the last reply's speed and the model, then the channel's instructions and feedback."""
        stats = format_stats(self._manager.last_stats(key), self._manager.model_name)
        feedback = await self._manager.feedback(key)
        channel = format_channel(await self._manager.persona(key), feedback.helpful, feedback.unhelpful)
        await surface.send(f"{stats}\n{channel}", Kind.PRIVATE)

    async def persona(self, message: Incoming, argument: str, surface: Surface) -> None:
        """/persona: show the channel's instructions; admins set them (``reset``: back to the default)."""
        if not argument:
            own = await self._manager.persona(message.key)
            shown = PERSONA_SHOWN if own else PERSONA_DEFAULT
            await surface.send(shown.format(prompt=own or self._manager.default_persona), Kind.PRIVATE)
            return
        if not self._admins.allows(message.author):
            audit_refusal(message.author, "/persona")
            await surface.send(NOT_ADMIN.format(command="persona"), Kind.PRIVATE)
            return
        if len(argument) > PERSONA_LIMIT:
            await surface.send(PERSONA_TOO_LONG.format(limit=PERSONA_LIMIT, length=len(argument)), Kind.PRIVATE)
            return
        prompt = None if argument.lower() == "reset" else argument
        await self._manager.set_persona(message.key, prompt, str(message.author))
        audit.info("persona of %s %s by %s", message.key, "reset" if prompt is None else "set", message.author)
        await surface.send(PERSONA_RESET if prompt is None else PERSONA_SET.format(prompt=prompt), Kind.INFO)

    async def reset(self, resetting: PendingReset, surface: Surface) -> None:
        """/reset, once the conversation's earlier messages are answered: how many turns were forgotten."""
        async with surface.indicate(Kind.INFO):
            removed = await resetting
        await surface.send(f"Conversation forgotten ({removed} messages).", Kind.INFO)

    async def export(self, who: Identity, argument: str, surface: Surface) -> None:
        """/export (admins): the export's progress in one message that stays short, then its outcome."""
        if not self._admins.allows(who):
            audit_refusal(who, "/export")
            await surface.send(NOT_ADMIN.format(command="export"), Kind.PRIVATE)
            return
        pacing = surface.pacing
        view = LiveMessages(KindSink(surface, Kind.PRIVATE), pacing.budget, pacing.message_limit)
        lines: list[str] = []

        async def progress(line: str) -> None:
            lines.append(line)
            await view.show(latest(lines), final=False)

        async with surface.indicate(Kind.PRIVATE):
            outcome = await self._actions.export(str(who), argument, progress)
        if lines:
            await view.show(latest(lines), final=True)
        # Its own message: a surface that may edit only so often (Slack's response_url) never loses it.
        await surface.send(outcome, Kind.PRIVATE)


def latest(lines: list[str]) -> str:
    """The latest progress lines: one message that stays short, on platforms that may edit it only so often."""
    return "\n".join(lines[-PROGRESS_LINES_SHOWN:])
