"""The behaviour suite's harness for Discord: the real adapter on the local Discord stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.discord import DiscordAdapter, DiscordConfig
from bot.core import Core
from tests.behaviour.harness import ADMIN, ADMIN_IDS, MEMBER, SubmitCounter, wait_until
from tests.discord import payloads
from tests.discord.standin import DiscordStandIn

# The slash commands the adapter registers, and the name of each one's option.
SLASH_OPTIONS = {"ask": "prompt", "reset": None, "stats": None, "export": "argument"}
USERS = {ADMIN: payloads.user(int(ADMIN_IDS["discord"][0]), "admin"), MEMBER: payloads.user(payloads.USER_ID, "member")}


class DiscordHarness:
    """Plays users in #general of the stand-in's server; reads back what the bot posted."""

    platform = "discord"

    def __init__(
        self, standin: DiscordStandIn, counter: SubmitCounter, task: asyncio.Task[None], stop: asyncio.Event
    ) -> None:
        self.standin = standin
        self.stop = stop
        self._counter = counter
        self._task = task

    async def message(self, text: str, *, user: str = MEMBER, addressed: bool = True) -> list[str]:
        """Post ``text`` in #general (mentioning the bot when ``addressed``); the bot's answers once idle."""
        before, submits = len(self.standin.posted), self._counter.count
        await self.standin.dispatch("MESSAGE_CREATE", _message(text, user, addressed))
        await self._counter.settled(submits, expect_answer=addressed)
        return self._texts(before)

    async def command(self, name: str, argument: str = "", *, user: str = MEMBER) -> list[str]:
        """Use slash command ``name``; a command Discord has no slash command for is typed, mentioning the bot."""
        if name not in SLASH_OPTIONS:
            return await self.message(f"/{name} {argument}".strip(), user=user)
        option = SLASH_OPTIONS[name]
        options = {option: argument} if option and argument else {}
        before, submits = len(self.standin.posted), self._counter.count
        interaction = payloads.interaction_create(name, options, invoker=USERS[user])
        await self.standin.dispatch("INTERACTION_CREATE", interaction)
        await self._counter.settled(submits)
        return self._texts(before)

    async def stop_while_answering(self, text: str) -> list[str]:
        """Mention the bot, stop it once its answer's first message is posted, wait for ``serve`` to return."""
        before = len(self.standin.posted)
        await self.standin.dispatch("MESSAGE_CREATE", _message(text, MEMBER, addressed=True))
        await wait_until(lambda: len(self.standin.posted) > before)
        await self.stopped()
        return self._texts(before)

    async def stopped(self) -> None:
        """Set the stop event and wait for ``serve`` to return (re-raising why it failed, if it did)."""
        self.stop.set()
        await self._task

    def _texts(self, since: int) -> list[str]:
        # A deferred command response that was never filled in ("thinking…") shows no text of its own.
        return [posted.content for posted in self.standin.posted[since:] if posted.content]


def _message(text: str, user: str, addressed: bool) -> payloads.Payload:
    if not addressed:
        return payloads.message_create(text, author=USERS[user])
    content = f"{payloads.mention()} {text}"
    return payloads.message_create(content, author=USERS[user], mentions=(payloads.bot_user(),))


@asynccontextmanager
async def discord_harness(core: Core) -> AsyncIterator[DiscordHarness]:
    """Run the Discord adapter over ``core`` against a fresh stand-in until the block ends."""
    standin = DiscordStandIn()
    await standin.start()
    counter = SubmitCounter(core)
    config = DiscordConfig(
        payloads.TOKEN, api_base=standin.api_base, edit_interval_s=0.1, edits_per_second=20.0, guild_ready_timeout_s=0.1
    )
    stop = asyncio.Event()
    task = asyncio.create_task(DiscordAdapter(config).serve(core, stop))
    harness = DiscordHarness(standin, counter, task, stop)
    try:
        connected = asyncio.create_task(standin.connected())
        await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            connected.cancel()
            task.result()  # raises why the bot did not start
        yield harness
        await harness.stopped()
    finally:
        if not task.done():
            stop.set()
            await asyncio.wait({task}, timeout=60)
        await standin.close()
