"""A reply cut short shows so in chat: the text so far, then ``INTERRUPTED_MARK``.

The real bundled model answers through the core into an in-memory surface; the
engine's child process is killed (or the bot stopped) once the reply's first text
is on screen.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.memory import MemorySurface, Post
from bot.commands import FAILED
from bot.core import Core
from bot.streaming import INTERRUPTED_MARK
from bot.surface import Kind
from bot.types import ConversationKey, Identity, Incoming
from model.loader import load_process_engine
from model.openvino_engine import OpenVINOEngine
from model.process_engine import ProcessEngine
from tests.behaviour.harness import wait_until
from tests.conftest import make_core, make_manager
from tests.test_batching_engine import EXACT

pytestmark = pytest.mark.model

# Long enough that the story is still being written when the test cuts it.
LONG_REPLY_TOKENS = 256
STORY = "Write a long story about a lighthouse keeper."


@pytest.fixture
async def process_engine(bundled_model: Path) -> AsyncIterator[ProcessEngine]:
    """A model process of this test's own, which the test kills."""
    engine = await asyncio.to_thread(load_process_engine, bundled_model, "CPU", EXACT)
    yield engine
    await asyncio.wait_for(engine.aclose(), 30)


def chat(core: Core, surface: MemorySurface) -> asyncio.Task[None]:
    """Ask for ``STORY`` in a channel of its own."""
    message = Incoming(ConversationKey("memory", "cut"), Identity("memory", "tester"), STORY)
    return core.submit(message, surface)


def reply_of(surface: MemorySurface) -> Post | None:
    """The reply's message, once it shows some text."""
    return next((post for post in surface.posts if post.kind is Kind.REPLY and post.text.strip()), None)


async def first_text(surface: MemorySurface) -> str:
    """The reply's text as first shown in chat."""
    await wait_until(lambda: reply_of(surface), limit_s=120)
    post = reply_of(surface)
    assert post is not None
    return post.versions[0]


async def test_an_engine_killed_mid_reply_leaves_the_text_with_the_mark_and_a_failure(
    process_engine: ProcessEngine,
) -> None:
    core = make_core(make_manager(process_engine, max_new_tokens=LONG_REPLY_TOKENS))  # type: ignore[arg-type]
    surface = MemorySurface()
    answering = chat(core, surface)
    shown = await first_text(surface)

    os.kill(process_engine.pid, signal.SIGKILL)
    await asyncio.wait_for(answering, 60)  # the core answers the failure; the task itself does not raise

    reply = reply_of(surface)
    assert reply is not None
    assert reply.text.endswith(INTERRUPTED_MARK), reply.text
    assert reply.text.startswith(shown.rstrip())
    # The failure is told after the cut reply, in a message of its own.
    assert [post.kind for post in surface.posts] == [Kind.REPLY, Kind.INFO]
    failure = surface.posts[-1].text
    assert failure.startswith(FAILED) and "model process stopped" in failure


async def test_a_stop_cancelling_a_reply_leaves_the_text_with_the_mark(engine: OpenVINOEngine) -> None:
    core = make_core(make_manager(engine, max_new_tokens=LONG_REPLY_TOKENS), stop_grace_s=0.01)
    surface = MemorySurface()
    answering = chat(core, surface)
    shown = await first_text(surface)

    assert await asyncio.wait_for(core.drain(), 60) == 1  # one answer cancelled after the tiny grace

    assert answering.cancelled()
    reply = reply_of(surface)
    assert reply is not None
    assert reply.text.endswith(INTERRUPTED_MARK) and reply.text.startswith(shown.rstrip())
    assert not [post for post in surface.posts if post.kind is Kind.INFO], "a stop is no failure"
