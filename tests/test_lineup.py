"""The line for generation slots (pure logic), and replies waiting in it on the whole bot."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest

from adapters.memory import MemorySurface
from bot.admin import AdminPolicy, NoAdminActions
from bot.admission import Admission, AdmissionLimits
from bot.core import Core
from bot.lineup import IN_LINE, NEXT_IN_LINE, Lineup, in_line_text
from bot.manager import ConversationManager
from bot.surface import Kind
from bot.types import ConversationKey, Identity, Incoming
from model.openvino_engine import OpenVINOEngine
from tests.behaviour.harness import wait_until
from tests.conftest import make_manager


async def settle() -> None:
    """Let every task that can run, run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_tickets_get_slots_in_the_order_they_joined_up_to_the_capacity() -> None:
    lineup = Lineup(2)
    first, second, third, fourth = (lineup.join(key) for key in "abcd")
    assert first.holding and second.holding and not third.holding
    assert (lineup.generating, lineup.waiting) == (2, 2)
    granted: list[str] = []

    async def take(ticket: object) -> None:
        await ticket.acquire()  # type: ignore[attr-defined]
        granted.append(ticket.key)  # type: ignore[attr-defined]

    tasks = [asyncio.create_task(take(ticket)) for ticket in (fourth, third)]
    await settle()
    assert granted == []
    second.release()
    await settle()
    assert granted == ["c"]
    first.release()
    await settle()
    assert granted == ["c", "d"]
    await asyncio.gather(*tasks)


async def test_ahead_counts_the_tickets_still_waiting_before_one() -> None:
    lineup = Lineup(1)
    holder, a, b, c = (lineup.join(key) for key in ("x", "a", "b", "a"))
    assert [ticket.ahead for ticket in (holder, a, b, c)] == [0, 0, 1, 2]
    assert lineup.waiting_except("a") == 1
    b.release()  # left the line before its turn
    assert (c.ahead, lineup.waiting) == (1, 2)
    holder.release()
    assert a.holding and c.ahead == 0
    assert not holder.holding and not holder.waiting


async def test_every_change_wakes_those_waiting_for_one() -> None:
    lineup = Lineup(1)
    holder = lineup.join()
    waiter = lineup.join()
    changed = asyncio.ensure_future(lineup.changed())
    await settle()
    assert not changed.done()
    holder.release()
    await settle()
    assert changed.done() and waiter.holding
    later = asyncio.ensure_future(lineup.changed())  # a change that came before it is not one it waits for
    await settle()
    assert not later.done()
    waiter.release()
    await later


async def test_a_waiting_ticket_cancelled_leaves_the_line() -> None:
    lineup = Lineup(1)
    holder = lineup.join()
    ticket = lineup.join()
    waiting = asyncio.create_task(ticket.acquire())
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lineup.waiting == 0
    holder.release()
    assert lineup.generating == 0  # nothing was handed to the cancelled ticket


async def test_a_ticket_cancelled_just_as_it_got_its_slot_gives_it_back() -> None:
    lineup = Lineup(1)
    holder = lineup.join()
    ticket = lineup.join()
    waiting = asyncio.create_task(ticket.acquire())
    await settle()
    holder.release()  # granted, but the waiting task has not run since
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lineup.generating == 0 and lineup.waiting == 0
    assert lineup.join().holding


async def test_async_with_releases_the_slot_on_every_path() -> None:
    lineup = Lineup(1)
    with pytest.raises(RuntimeError):
        async with lineup.join():
            assert lineup.generating == 1
            raise RuntimeError("failed while generating")
    assert lineup.generating == 0
    ticket = lineup.join()
    ticket.release()
    ticket.release()  # twice is harmless
    assert lineup.generating == 0


def test_a_lineup_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Lineup(0)


def test_the_in_line_text_names_the_replies_ahead() -> None:
    assert in_line_text(0) == NEXT_IN_LINE
    assert in_line_text(3) == IN_LINE.format(ahead=3) == "⏳ In line: 3 ahead of you."


# The whole bot: three conversations asking at once with one generation slot.


class GatedSurface(MemorySurface):
    """A memory surface that records the indicator and can hold its first post until ``release`` is set."""

    def __init__(self, events: list[str], name: str, release: asyncio.Event | None = None) -> None:
        super().__init__()
        self.events, self.name, self.release = events, name, release
        self.indicating = False

    async def send(self, text: str, kind: Kind) -> object:
        self.events.append(f"{self.name} send")
        if self.release is not None:
            await self.release.wait()
        return await super().send(text, kind)

    def indicate(self, kind: Kind) -> AbstractAsyncContextManager[object]:
        return self._indicating()

    @contextlib.asynccontextmanager
    async def _indicating(self) -> AsyncIterator[None]:
        self.events.append(f"{self.name} indicator on")
        self.indicating = True
        try:
            yield
        finally:
            self.indicating = False
            self.events.append(f"{self.name} indicator off")


def one_slot_core(engine: OpenVINOEngine) -> Core:
    admission = Admission(AdmissionLimits(user_rate=None, max_generating=1))
    return Core(make_manager(engine), AdminPolicy({}), NoAdminActions(), admission=admission)


async def test_replies_waiting_for_the_slot_show_their_place_then_become_the_reply(engine: OpenVINOEngine) -> None:
    core, events, release = one_slot_core(engine), list[str](), asyncio.Event()
    first = GatedSurface(events, "first", release)
    waiting = [GatedSurface(events, name) for name in ("second", "third")]
    questions = ["What is the capital of France?", "Name a colour.", "What is 2 + 2?"]
    tasks = [
        core.submit(Incoming(ConversationKey("memory", name), Identity("memory", "ada"), question), surface)
        for name, question, surface in zip(("a", "b", "c"), questions, [first, *waiting], strict=True)
    ]
    # The first reply holds the slot, stuck on its first post, until both others show their place.
    await wait_until(lambda: all(surface.posts for surface in waiting), limit_s=30)
    assert [surface.posts[0].versions[0] for surface in waiting] == [in_line_text(0), in_line_text(1)]
    # Only the reply holding the slot has shown the indicator (it goes off at its first text, which is held).
    assert not any(surface.indicating for surface in waiting) and "first indicator on" in events
    release.set()
    await asyncio.gather(*tasks)
    for surface in (first, *waiting):
        assert len(surface.posts) == 1 and surface.posts[0].kind is Kind.REPLY
        assert surface.posts[0].text.strip() and "In line" not in surface.posts[0].text
    assert "Paris" in first.posts[0].text
    # Each indicator ran only while its reply generated: the slot passes from one to the next.
    assert [event for event in events if "indicator" in event] == [
        f"{name} indicator {state}" for name in ("first", "second", "third") for state in ("on", "off")
    ]
    assert core.lineup.generating == 0 and core.lineup.waiting == 0


async def test_a_reply_behind_its_own_conversation_counts_those_and_the_line(manager: ConversationManager) -> None:
    lineup = Lineup(1)
    holder = lineup.join("elsewhere")  # the one slot is taken
    first_a, second_a = (manager.reply(ConversationKey("memory", "a"), "Hi.", lineup=lineup) for _ in range(2))
    first_b = manager.reply(ConversationKey("memory", "b"), "Hi.", lineup=lineup)
    reading = [asyncio.create_task(reply.complete()) for reply in (first_b, first_a)]
    await settle()
    assert lineup.waiting == 2
    assert (first_b.ahead(), first_a.ahead()) == (0, 1)
    # Its own conversation's first reply and the other conversation's: both start before it.
    assert second_a.ahead() == 2
    moved = asyncio.ensure_future(second_a.moved())
    await settle()
    assert not moved.done()
    for task in reading:
        task.cancel()
    await asyncio.gather(*reading, return_exceptions=True)
    await moved
    assert lineup.waiting == 0 and second_a.ahead() == 0
    holder.release()
    for reply in (first_a, second_a, first_b):
        await reply.aclose()
    assert lineup.generating == 0
