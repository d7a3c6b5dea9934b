"""Splitting and paced streaming of replies into chat messages, and what shows before them (pure logic)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import streaming
from bot.lineup import Changes, in_line_text
from bot.streaming import (
    EMPTY_REPLY,
    FENCE,
    INTERRUPTED_MARK,
    NO_REPLY,
    EditBudget,
    interrupted,
    split_message,
    stream_to_sink,
)


class RecordingSink:
    """Keeps every message and the history of its edits."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.calls: list[tuple[str, int, str]] = []

    async def send(self, text: str) -> int:
        self.messages.append(text)
        self.calls.append(("send", len(self.messages) - 1, text))
        return len(self.messages) - 1

    async def edit(self, handle: int, text: str) -> None:
        self.messages[handle] = text
        self.calls.append(("edit", handle, text))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _strip_fences(text: str) -> str:
    return "".join(line for line in text.splitlines() if not line.strip().startswith(FENCE))


def _fence_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip().startswith(FENCE))


chat_text = st.lists(st.sampled_from(["ab", "c", " ", "\n", "`", "word ", "```py\n", "\n```\n"]), max_size=200).map(
    "".join
)


@settings(max_examples=300, deadline=None)
@given(text=chat_text, limit=st.integers(min_value=32, max_value=120))
def test_split_parts_fit_and_keep_fences_balanced(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert all(len(part) <= limit for part in parts)
    assert all(_fence_count(part) % 2 == 0 for part in parts[:-1])
    assert _strip_fences("".join(parts)).replace("\n", "") == _strip_fences(text).replace("\n", "")


def test_split_reopens_code_block_with_its_language() -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(40)) + "\n```\nDone."
    parts = split_message(code, 100)
    assert len(parts) > 2
    assert parts[0].startswith("```python\n") and parts[0].endswith("\n```")
    assert all(part.startswith("```python\n") for part in parts[1:-1])
    assert parts[-1].endswith("Done.")


def test_split_prefers_line_breaks() -> None:
    text = "first line of text\n" * 10
    assert all(part.endswith("\n") for part in split_message(text, 64)[:-1])


def test_short_text_is_one_part() -> None:
    assert split_message("hello", 2000) == ["hello"]


async def _chunks(pieces: list[str], clock: FakeClock, step: float) -> AsyncIterator[str]:
    for piece in pieces:
        clock.now += step
        await asyncio.sleep(0)  # let other replies in flight interleave
        yield piece


async def test_stream_posts_first_chunk_then_edits_at_most_once_per_interval() -> None:
    clock, sink = FakeClock(), RecordingSink()
    budget = EditBudget(per_message_interval=1.0, edits_per_second=100, clock=clock)
    pieces = [f"word{i} " for i in range(50)]  # 50 chunks over 5 seconds
    handles = await stream_to_sink(_chunks(pieces, clock, 0.1), sink, budget, limit=2000)
    assert handles == [0]
    assert sink.calls[0] == ("send", 0, "word0 ")
    edits = [c for c in sink.calls if c[0] == "edit"]
    assert 3 <= len(edits) <= 7  # about one per second over five seconds, plus the last
    assert sink.messages == ["".join(pieces)]


async def test_shared_budget_limits_edits_across_replies() -> None:
    clock = FakeClock()
    budget = EditBudget(per_message_interval=0.0, edits_per_second=2, clock=clock, sleep=clock.sleep)
    sinks = [RecordingSink(), RecordingSink()]
    # Two replies in flight together; each chunk of either advances time by 0.05 s: 10 s in all.
    await asyncio.gather(
        *(stream_to_sink(_chunks([f"{i} " for i in range(100)], clock, 0.05), sink, budget, 2000) for sink in sinks)
    )
    edits = sum(1 for sink in sinks for call in sink.calls if call[0] == "edit")
    assert 5 <= edits <= 2 * 10 + 2 + 2  # rate * time, plus the bucket's start and the two last edits
    assert all(sink.messages == ["".join(f"{i} " for i in range(100))] for sink in sinks)


async def test_long_reply_continues_in_new_messages_with_exact_final_parts() -> None:
    clock, sink = FakeClock(), RecordingSink()
    budget = EditBudget(per_message_interval=1.0, edits_per_second=100, clock=clock)
    pieces = ["```sh\n"] + [f"echo line {i}\n" for i in range(60)] + ["```\nThat is all."]
    await stream_to_sink(_chunks(pieces, clock, 0.05), sink, budget, limit=200)
    assert sink.messages == split_message("".join(pieces), 200)
    assert len(sink.messages) > 3


async def test_blank_reply_gets_a_visible_message() -> None:
    sink = RecordingSink()
    await stream_to_sink(_chunks(["", "  "], FakeClock(), 0.1), sink, EditBudget(), limit=2000)
    assert sink.messages == [EMPTY_REPLY]


def test_limit_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        split_message("text", 5)


async def test_a_text_that_must_go_out_goes_before_anyones_optional_edit() -> None:
    clock, gate = FakeClock(), asyncio.Event()

    async def held_sleep(seconds: float) -> None:
        clock.now += seconds
        await gate.wait()

    budget = EditBudget(per_message_interval=0.0, edits_per_second=1, clock=clock, sleep=held_sleep)
    assert budget.try_take()  # another reply's edit spent the budget
    final = asyncio.create_task(budget.take())
    await asyncio.sleep(0)
    clock.now += 5  # tokens have come back meanwhile...
    assert not budget.try_take()  # ...but the waiting final text is first in line
    gate.set()
    await final
    clock.now += 1
    assert budget.try_take()  # optional edits resume once nothing must go out


async def test_a_reply_finishing_while_the_budget_is_spent_is_posted_whole() -> None:
    clock, sink = FakeClock(), RecordingSink()
    budget = EditBudget(per_message_interval=0.0, edits_per_second=1, clock=clock, sleep=clock.sleep)
    assert budget.try_take()  # the one token there was went to another reply
    pieces = [f"word{i} " for i in range(20)]
    await stream_to_sink(_chunks(pieces, clock, 0.0), sink, budget, limit=2000)
    assert sink.calls == [("send", 0, "".join(pieces))]


# Waiting in line before the first text.


class FakeLine:
    """A reply's place in line, moved by the test; ``None`` once it generates."""

    def __init__(self, ahead: int | None) -> None:
        self.value, self._changes = ahead, Changes()

    def ahead(self) -> int | None:
        return self.value

    def moved(self) -> Awaitable[object]:
        return self._changes.wait()

    def move(self, ahead: int | None) -> None:
        self.value = ahead
        self._changes.notify()


class Indicator:
    """Records when the typing indicator is on."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def __aenter__(self) -> None:
        self.events.append("indicator on")

    async def __aexit__(self, *exc_info: object) -> None:
        self.events.append("indicator off")


async def _after_turn(line: FakeLine, pieces: list[str], fail: bool = False) -> AsyncIterator[str]:
    while line.value is not None:
        await line.moved()
    await asyncio.sleep(0.01)  # the prompt is read before the first text
    for piece in pieces:
        yield piece
    if fail:
        raise RuntimeError("the device was lost")


@pytest.fixture
def quick_in_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streaming, "IN_LINE_AFTER_S", 0.01)


async def _wait_for(condition: Callable[[], object]) -> None:
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110  # a fake line has no event for "posted"
            await asyncio.sleep(0.005)


async def test_a_wait_shows_its_place_which_becomes_the_reply(quick_in_line: None) -> None:
    sink, line, events = RecordingSink(), FakeLine(2), list[str]()
    budget = EditBudget(per_message_interval=0.0, edits_per_second=1e9)
    streaming_task = asyncio.create_task(
        stream_to_sink(_after_turn(line, ["Hello", " there."]), sink, budget, 2000, Indicator(events), line)
    )
    await _wait_for(lambda: sink.messages)
    assert sink.messages == [in_line_text(2)] and events == []
    line.move(0)
    await _wait_for(lambda: sink.messages == [in_line_text(0)])
    line.move(None)
    assert await streaming_task == [0]
    assert sink.messages == ["Hello there."]  # one message: the in-line text was edited into the reply
    assert events == ["indicator on", "indicator off"]  # only once it generated


async def test_a_short_wait_shows_nothing_and_the_indicator_runs_while_generating() -> None:
    sink, line, events = RecordingSink(), FakeLine(1), list[str]()
    streaming_task = asyncio.create_task(
        stream_to_sink(_after_turn(line, ["Hi."]), sink, EditBudget(), 2000, Indicator(events), line)
    )
    await asyncio.sleep(0.01)
    assert events == []
    line.move(None)
    await streaming_task
    assert sink.calls == [("send", 0, "Hi.")] and events == ["indicator on", "indicator off"]


@pytest.mark.parametrize(("fail", "expected"), [(False, EMPTY_REPLY), (True, NO_REPLY)])
async def test_no_in_line_text_stays_after_an_empty_or_failed_reply(
    quick_in_line: None, fail: bool, expected: str
) -> None:
    sink, line = RecordingSink(), FakeLine(0)
    budget = EditBudget(per_message_interval=0.0, edits_per_second=1e9)
    streaming_task = asyncio.create_task(stream_to_sink(_after_turn(line, [" "], fail), sink, budget, 2000, None, line))
    await _wait_for(lambda: sink.messages)
    line.move(None)
    with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
        await streaming_task
    assert sink.messages == [expected]


async def test_a_reply_cancelled_while_in_line_leaves_no_in_line_text(quick_in_line: None) -> None:
    sink, line = RecordingSink(), FakeLine(3)
    budget = EditBudget(per_message_interval=0.0, edits_per_second=1e9)
    streaming_task = asyncio.create_task(stream_to_sink(_after_turn(line, ["never"]), sink, budget, 2000, None, line))
    await _wait_for(lambda: sink.messages)
    streaming_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await streaming_task
    assert sink.messages == [NO_REPLY]


# Failures on the platform's side, and replies cut short.


class FlakySink(RecordingSink):
    """A sink whose first ``failing_sends`` posts and first ``failing_edits`` edits raise (``None``: all of them)."""

    def __init__(self, failing_sends: int | None = 0, failing_edits: int | None = 0) -> None:
        super().__init__()
        self.failing = {"send": failing_sends, "edit": failing_edits}
        self.failed: list[str] = []

    def _maybe_fail(self, call: str) -> None:
        left = self.failing[call]
        if left is None or left > 0:
            self.failing[call] = None if left is None else left - 1
            self.failed.append(call)
            raise ConnectionError(f"{call} failed")

    async def send(self, text: str) -> int:
        self._maybe_fail("send")
        return await super().send(text)

    async def edit(self, handle: int, text: str) -> None:
        self._maybe_fail("edit")
        await super().edit(handle, text)


def _fast_budget() -> EditBudget:
    return EditBudget(per_message_interval=0.0, edits_per_second=1e9)


async def _pieces(pieces: list[str], fail: BaseException | None = None) -> AsyncIterator[str]:
    for piece in pieces:
        await asyncio.sleep(0)
        yield piece
    if fail is not None:
        raise fail


async def test_failed_intermediate_edits_are_logged_and_the_reply_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock, sink = FakeClock(), FlakySink(failing_edits=2)
    budget = EditBudget(per_message_interval=0.0, edits_per_second=1e9, clock=clock)
    pieces = [f"word{i} " for i in range(8)]  # one every 3 s
    with caplog.at_level("WARNING", logger="bot.streaming"):
        assert await stream_to_sink(_chunks(pieces, clock, 3.0), sink, budget, 2000) == [0]
    assert sink.failed == ["edit", "edit"]
    assert sink.messages == ["".join(pieces)]
    assert caplog.text.count("Could not update a message") == 2
    # After each failure the next chunk shows nothing (a pause), the one after is tried again.
    assert streaming.FAILED_UPDATE_PAUSE_S == 5.0
    edits = [text for call, _, text in sink.calls if call == "edit"]
    assert edits == ["".join(pieces[:6]), "".join(pieces[:7]), "".join(pieces)]


async def test_a_failed_first_post_is_posted_with_later_text() -> None:
    sink = FlakySink(failing_sends=1)
    await stream_to_sink(_pieces(["Hello", " there", "."]), sink, _fast_budget(), 2000)
    assert sink.failed == ["send"]
    assert sink.calls == [("send", 0, "Hello there.")]  # after a pause: the final text


async def test_a_final_edit_that_fails_posts_the_whole_text_anew() -> None:
    sink = FlakySink(failing_edits=None)  # edits never work again
    handles = await stream_to_sink(_pieces(["Hello", " there", "."]), sink, _fast_budget(), 2000)
    assert handles == [1]
    assert sink.messages == ["Hello", "Hello there."]  # the first stays as it was; the whole reply follows


async def test_a_final_text_that_cannot_be_posted_raises() -> None:
    sink = FlakySink(failing_sends=None)
    with pytest.raises(ConnectionError, match="send failed"):
        await stream_to_sink(_pieces(["Hello", "."]), sink, _fast_budget(), 2000)
    assert sink.messages == []


async def test_a_stream_failing_midway_shows_its_text_with_the_interrupted_mark() -> None:
    sink = FlakySink()
    with pytest.raises(RuntimeError, match="device"):
        await stream_to_sink(_pieces(["Once", " upon"], RuntimeError("device lost")), sink, _fast_budget(), 2000)
    assert sink.messages == ["Once upon" + INTERRUPTED_MARK]


async def test_a_cancelled_stream_shows_its_text_with_the_interrupted_mark() -> None:
    sink, more = RecordingSink(), asyncio.Event()

    async def stalled() -> AsyncIterator[str]:
        yield "Once upon a time"
        await more.wait()  # the bot stops before the rest comes
        yield "never"

    streaming_task = asyncio.create_task(stream_to_sink(stalled(), sink, _fast_budget(), 2000))
    await _wait_for(lambda: sink.messages)
    streaming_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await streaming_task
    assert sink.messages == ["Once upon a time" + INTERRUPTED_MARK]


async def test_the_interrupted_mark_comes_after_a_code_block_left_open() -> None:
    sink = RecordingSink()
    with pytest.raises(RuntimeError):
        await stream_to_sink(_pieces(["```py\n", "print(1)\n"], RuntimeError("lost")), sink, _fast_budget(), 2000)
    assert sink.messages == ["```py\nprint(1)\n```" + INTERRUPTED_MARK]
    assert interrupted("Done.\n") == "Done." + INTERRUPTED_MARK
