"""The behaviour suite's harness for Slack: the real adapter over Socket Mode against the local stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.slack import SlackAdapter, SlackConfig
from adapters.slack.translate import COMMANDS
from bot.core import Core
from tests.behaviour.harness import ADMIN, ADMIN_IDS, MEMBER, Harness, SubmitCounter
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SlackStandIn, message_event

CHANNEL = "CBEHAVE01"  # not watched: only mentions are answered there
USER_IDS = {ADMIN: ADMIN_IDS["slack"][0], MEMBER: "UMEMBER01"}
START_TIMEOUT_S = 30.0


class SlackHarness:
    """Plays Slack users against a running ``SlackAdapter`` and reads what the stand-in received."""

    platform = "slack"

    def __init__(self, standin: SlackStandIn, counter: SubmitCounter, stop: asyncio.Event, serving: asyncio.Task[None]):
        self._standin = standin
        self._counter = counter
        self._stop = stop
        self._serving = serving
        self._thread: str | None = None  # the conversation's thread, once the first mention started it

    async def message(self, text: str, *, user: str = MEMBER, addressed: bool = True) -> list[str]:
        """A mention (``<@BOT> text``) when ``addressed``, else a plain message, in an unwatched channel.

        Mentions after the first continue in its thread, as users carry on a conversation in Slack.
        """
        kind = "app_mention" if addressed else "message"
        shown, before = self._snapshot(), self._counter.count
        thread = self._thread if addressed else None
        typed = escaped(text)
        ts = await self._send(f"<@{BOT_USER_ID}> {typed}" if addressed else typed, user, kind, thread)
        if addressed and self._thread is None:
            self._thread = ts
        await self._counter.settled(before, expect_answer=addressed)
        return self._shown_since(shown)

    async def command(self, name: str, argument: str = "", *, user: str = MEMBER) -> list[str]:
        """The slash command ``/name``; a name Slack has no command for is typed in a mention instead."""
        if f"/{name}" not in COMMANDS:
            return await self.message(f"/{name} {argument}".strip(), user=user)
        shown, before = self._snapshot(), self._counter.count
        await self._standin.send_command(f"/{name}", argument, user=USER_IDS[user], channel=CHANNEL)
        await self._counter.settled(before)
        return self._shown_since(shown)

    async def stop_while_answering(self, text: str) -> list[str]:
        """Mention the bot, set stop at the answer's first post, and wait for ``serve`` to return."""
        shown = self._snapshot()
        ts = await self._send(f"<@{BOT_USER_ID}> {text}", MEMBER, "app_mention")
        await self._standin.wait_replies(CHANNEL, ts, limit_s=120)
        self._stop.set()
        await asyncio.wait_for(self._serving, timeout=120)
        return self._shown_since(shown)

    async def _send(self, text: str, user: str, kind: str, thread_ts: str | None = None) -> str:
        ts = self._standin.next_ts()
        event = message_event(text, channel=CHANNEL, user=USER_IDS[user], ts=ts, thread_ts=thread_ts, kind=kind)
        await self._standin.send_event(event)
        return ts

    def _snapshot(self) -> dict[int, int]:
        """How many versions each message shown so far has, to tell what an answer added or edited."""
        return {id(posted): len(posted.texts) for posted in self._standin.timeline}

    def _shown_since(self, snapshot: dict[int, int]) -> list[str]:
        return [p.text for p in self._standin.timeline if snapshot.get(id(p)) != len(p.texts)]


def escaped(text: str) -> str:
    """``text`` as Slack delivers what a user typed: ``&``, ``<`` and ``>`` escaped, so only markup uses ``<...>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@asynccontextmanager
async def slack_harness(core: Core) -> AsyncIterator[Harness]:
    """Run ``SlackAdapter`` over ``core`` against a fresh stand-in for the block; stop it afterwards."""
    async with SlackStandIn() as standin:
        config = SlackConfig(
            bot_token=BOT_TOKEN,
            app_token=APP_TOKEN,
            api_url=standin.api_url,
            edit_interval_s=0.05,
            edits_per_minute=6000,
        )
        adapter, stop, counter = SlackAdapter(config), asyncio.Event(), SubmitCounter(core)
        serving = asyncio.create_task(adapter.serve(core, stop))
        ready = asyncio.create_task(adapter.ready.wait())
        await asyncio.wait({serving, ready}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if serving.done():
            serving.result()  # raises what made it fail to start
        assert adapter.ready.is_set(), "the Slack adapter did not start in time"
        try:
            yield SlackHarness(standin, counter, stop, serving)
        finally:
            stop.set()
            await asyncio.wait_for(serving, timeout=120)
