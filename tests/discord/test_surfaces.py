"""Unit tests of the Discord surfaces: what each core call becomes in discord.py calls (fakes, no network)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest

from adapters.discord.surfaces import ChannelSurface, InteractionSurface
from adapters.discord.translate import NO_MENTIONS
from bot.streaming import EditBudget
from bot.surface import Kind, Pacing

PACING = Pacing(EditBudget(0.0, 100.0), 2000)


class FakeResponse:
    def __init__(self) -> None:
        self.status = 404
        self.reason = "Not Found"


class FakeMessage:
    """A user's message: what ChannelSurface replies to."""

    def to_reference(self, *, fail_if_not_exists: bool = True) -> str:
        assert not fail_if_not_exists, "a deleted message must not make the answer fail"
        return "reference"


class FakeChannel:
    def __init__(self, typing_fails: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._typing_fails = typing_fails

    async def send(self, content: str, **kwargs: Any) -> str:
        self.calls.append((content, kwargs))
        return f"message {len(self.calls)}"

    @contextlib.asynccontextmanager
    async def typing(self) -> AsyncIterator[None]:
        if self._typing_fails:
            raise discord.HTTPException(FakeResponse(), "typing refused")  # type: ignore[arg-type]
        self.calls.append(("typing", {}))
        yield


async def test_channel_surface_replies_once_without_pings_and_notices_are_subtext() -> None:
    channel = FakeChannel()
    surface = ChannelSurface(channel, FakeMessage(), PACING)  # type: ignore[arg-type]

    await surface.send("The answer", Kind.REPLY)
    await surface.send("Your message was cut.", Kind.NOTICE)

    assert channel.calls == [
        ("The answer", {"allowed_mentions": NO_MENTIONS, "reference": "reference"}),
        ("-# Your message was cut.", {"allowed_mentions": NO_MENTIONS}),
    ]
    assert surface.pacing is PACING


async def test_typing_failure_is_logged_and_the_answer_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    channel = FakeChannel(typing_fails=True)
    surface = ChannelSurface(channel, None, PACING)  # type: ignore[arg-type]
    async with surface.indicate(Kind.REPLY):
        await surface.send("still answered", Kind.REPLY)
    assert channel.calls == [("still answered", {"allowed_mentions": NO_MENTIONS})]
    assert "No typing indicator" in caplog.text


class FakeInteractionResponse:
    def __init__(self, log: list[tuple[str, dict[str, Any]]]) -> None:
        self._log = log
        self.done = False

    def is_done(self) -> bool:
        return self.done

    async def defer(self, **kwargs: Any) -> None:
        self._log.append(("defer", kwargs))
        self.done = True

    async def send_message(self, content: str, **kwargs: Any) -> None:
        self._log.append((f"respond {content}", kwargs))
        self.done = True


class FakeFollowup:
    def __init__(self, log: list[tuple[str, dict[str, Any]]]) -> None:
        self._log = log

    async def send(self, content: str, **kwargs: Any) -> str:
        self._log.append((f"follow up {content}", kwargs))
        return "follow-up message"


class FakeInteraction:
    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.response = FakeInteractionResponse(self.log)
        self.followup = FakeFollowup(self.log)

    async def edit_original_response(self, **kwargs: Any) -> None:
        self.log.append(("edit original", kwargs))


@pytest.mark.parametrize(("kind", "ephemeral"), [(Kind.REPLY, False), (Kind.INFO, False), (Kind.PRIVATE, True)])
async def test_command_surface_defers_then_follows_up(kind: Kind, ephemeral: bool) -> None:
    interaction = FakeInteraction()
    surface = InteractionSurface(interaction, PACING)  # type: ignore[arg-type]

    async with surface.indicate(kind):
        pass
    async with surface.indicate(kind):  # a command is deferred at most once
        pass
    handle = await surface.send("answer", kind)

    assert handle == "follow-up message"
    assert interaction.log == [
        ("defer", {"thinking": True, "ephemeral": ephemeral}),
        ("follow up answer", {"wait": True, "ephemeral": ephemeral, "allowed_mentions": NO_MENTIONS}),
    ]


async def test_command_surface_answers_directly_when_not_deferred() -> None:
    interaction = FakeInteraction()
    surface = InteractionSurface(interaction, PACING)  # type: ignore[arg-type]

    handle = await surface.send("only for you", Kind.PRIVATE)
    await surface.edit(handle, "still only for you", Kind.PRIVATE)

    assert interaction.log == [
        ("respond only for you", {"ephemeral": True, "allowed_mentions": NO_MENTIONS}),
        ("edit original", {"content": "still only for you", "allowed_mentions": NO_MENTIONS}),
    ]


async def test_failed_deferral_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    interaction = FakeInteraction()

    async def refuse(**kwargs: Any) -> None:
        raise discord.HTTPException(FakeResponse(), "Unknown interaction")  # type: ignore[arg-type]

    interaction.response.defer = refuse  # type: ignore[method-assign]
    async with InteractionSurface(interaction, PACING).indicate(Kind.REPLY):  # type: ignore[arg-type]
        pass
    assert "Could not defer" in caplog.text
