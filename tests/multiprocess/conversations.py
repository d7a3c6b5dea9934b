"""Many conversations sent to the Slack stand-in the way Slack sends them, spread over every connection.

Each conversation is a thread in its own channel, one the bot answers every message in (``SLACK_CHANNELS``):
the first message starts the thread, the others reply in it, so all of them are one conversation
(``ConversationKey("slack", channel, first_ts)``) whichever process gets them. (A DM thread would go to the
assistant view's handling instead; threads followed after a mention across processes are
tests/slack/test_shared_threads.py's.) A message goes out once the previous one of its conversation was
acknowledged (Slack's order within a channel); conversations interleave.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from tests.slack.standin import Posted, SlackStandIn, message_event
from tests.slack.workspace import Workspace

# The texts bot/lineup.py shows while a reply waits; they are edited into the reply later.
_PLACEHOLDER = "In line:"


@dataclass
class Conversation:
    """One thread: its channel, its person, and the messages sent so far (ts, text), in send order."""

    number: int
    sent: list[tuple[str, str]] = field(default_factory=list)

    @property
    def channel(self) -> str:
        """The conversation's channel."""
        return f"C{self.number:08d}"

    @property
    def user(self) -> str:
        """The person asking."""
        return f"U{self.number:08d}"

    @property
    def thread_ts(self) -> str:
        """The conversation's thread: its first message."""
        return self.sent[0][0]

    def answers(self, slack: SlackStandIn) -> list[Posted]:
        """The bot's messages in the thread that show an answer (not a place in line), in the order answers began."""
        shown = [m for m in slack.thread(self.channel, self.thread_ts) if not is_placeholder(m.text)]
        return sorted(shown, key=answer_started_at)


def is_placeholder(text: str) -> bool:
    """Whether a message shows a reply's place in line rather than the reply."""
    return _PLACEHOLDER in text


def answer_started_at(message: Posted) -> float:
    """When the message first showed its reply's text (after any place-in-line text)."""
    return next(at for text, at in zip(message.texts, message.shown_at, strict=True) if not is_placeholder(text))


def people(conversations: list[Conversation]) -> Workspace:
    """A workspace where everyone has a display name (so no lookup fails)."""
    workspace = Workspace()
    for conversation in conversations:
        workspace.person(conversation.user, f"Person {conversation.number}")
    return workspace


@dataclass
class Sender:
    """Sends each conversation's messages over the stand-in's connections in turn, some of them twice."""

    slack: SlackStandIn
    connections: list[int]
    repeated: frozenset[tuple[int, int]]  # (conversation, message index) delivered again
    repeats_sent: int = 0

    async def converse(self, conversation: Conversation, count: int) -> None:
        """Send ``count`` messages, each once the previous one was acknowledged; repeat the chosen ones."""
        for index in range(count):
            ts = self.slack.next_ts()
            text = f"Conversation {conversation.number}, message {index}: name a color."
            thread_ts = conversation.thread_ts if conversation.sent else None
            conversation.sent.append((ts, text))
            event = message_event(
                text, channel=conversation.channel, user=conversation.user, ts=ts, thread_ts=thread_ts
            )
            # Consecutive messages of one conversation go to different connections, so to different processes.
            first = (conversation.number + index) % len(self.connections)
            event_id = f"Ev{conversation.number:04d}{index:04d}"
            await self._deliver(event, event_id, first, retry_attempt=0)
            if (conversation.number, index) in self.repeated:
                # Slack's retries keep the event id; they may reach any connection, the other one included.
                await self._deliver(event, event_id, first + 1, retry_attempt=1)
                await self._deliver(event, event_id, first, retry_attempt=2)
                self.repeats_sent += 2

    async def _deliver(self, event: dict[str, Any], event_id: str, turn: int, *, retry_attempt: int) -> None:
        connection = self.connections[turn % len(self.connections)]
        envelope = await self.slack.send_event(
            event, event_id=event_id, retry_attempt=retry_attempt, connection=connection
        )
        ack = await self.slack.wait_ack(envelope, limit_s=30)
        assert "payload" not in ack or ack["payload"] is None, f"unexpected ack {ack}"


async def send_all(sender: Sender, conversations: list[Conversation], count: int) -> None:
    """Every conversation at once, each in Slack's order."""
    async with asyncio.TaskGroup() as group:
        for conversation in conversations:
            group.create_task(sender.converse(conversation, count))


def all_answered(slack: SlackStandIn, conversations: list[Conversation], count: int) -> bool | None:
    """True once every conversation shows ``count`` answers and no place in line (for ``wait_for``)."""
    for conversation in conversations:
        messages = slack.thread(conversation.channel, conversation.thread_ts)
        if any(is_placeholder(m.text) for m in messages) or len(messages) < count:
            return None
    return True
