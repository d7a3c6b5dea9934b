"""The load test of the issue: 500 mentions from 50 channels, across Discord and Slack at once, on one core.

The bot is built as ``bot run`` builds it (``open_core`` from ``Settings``, the adapters of
``load_adapters``, both served by ``run_until_stopped``) on the bundled model with the
batching engine (which generates in a process of its own), against the Discord and Slack
stand-ins.  250 mentions come from 25
Discord channels and 250 from 25 Slack channels, all within about two seconds, each
from a user of its own.  Then:

- every mention gets exactly one answer: its complete reply (the last text of the reply
  message is the text the core finished with, read back from the history store) or the
  busy answer; none gets both, none gets nothing;
- the Discord gateway heartbeat stays on time (the stand-in times every heartbeat, and
  discord.py logs no "Can't keep up");
- the bot is quiet soon after the last generation ends: every final text is delivered
  within ``QUIET_BOUND_S``;
- ``/metrics``, scraped while replies are still being written and again at the end, agrees
  with the chats: answered and busy per platform, and replies written plus replies in
  flight equal all replies.

Loop lag (a 10 ms asyncio timer) is measured and printed, never asserted: timing targets
belong to the benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import re
import signal
import sqlite3
import string
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from adapters.base import Adapter
from adapters.discord import DiscordAdapter
from adapters.discord.translate import render as discord_render
from adapters.slack import SlackAdapter
from adapters.slack.surfaces import render as slack_render
from bot.admission import BUSY
from bot.core import Core
from bot.settings import Settings
from bot.streaming import EMPTY_REPLY, split_message
from bot.surface import Kind
from bot.types import Incoming
from entry.compose import open_core
from entry.observability import bound_port, serve_observability
from entry.platforms import load_adapters, run_until_stopped
from tests.behaviour.harness import wait_until
from tests.discord import payloads
from tests.discord.standin import DiscordStandIn
from tests.slack.standin import APP_TOKEN, BOT_TOKEN, BOT_USER_ID, SlackStandIn, message_event

pytestmark = pytest.mark.model

CHANNELS_PER_PLATFORM = 25
MENTIONS_PER_CHANNEL = 10
MENTIONS = 2 * CHANNELS_PER_PLATFORM * MENTIONS_PER_CHANNEL
SEND_WINDOW_S = 2.0
# Eight tokens keep every reply to one message, so "one message per mention" is exact.
MAX_NEW_TOKENS = 8
# Twice the default: the engine works on a real batch for a while, and still most mentions get the busy answer.
MAX_WAITING = 64
# Both platforms' edit budgets (Discord's default is 4/s, Slack's 50/min): at those a reply per mention would take
# minutes to post whatever the engine does; 20/s is within Discord's global limit of 50 requests/s.
EDITS_PER_SECOND = 20.0
# Discord's HELLO asks for 41.25 s; 1 s lets a run of a minute show dozens of heartbeats.
HEARTBEAT_INTERVAL_S = 1.0
# How much later than its interval a heartbeat may arrive.  Discord closes a session whose heartbeat is overdue;
# a loop that answers within a second keeps every other event (gateway dispatches, Socket Mode acks) prompt too.
HEARTBEAT_GRACE_S = 1.0
# When the last generation ends at most MAX_WAITING replies owe their final text, one budget token each; 2 s
# more covers the HTTP round trips of the stand-ins sharing the loop on a loaded 2-core runner.
QUIET_BOUND_S = MAX_WAITING / EDITS_PER_SECOND + 2.0
# Loading the model, 500 mentions and every answer: the whole test stays well inside pytest's timeout.
ANSWERED_WITHIN_S = 150.0
LAG_TICK_S = 0.010

DISCORD_CHANNEL_BASE = 1300000000000001000
DISCORD_USER_BASE = 1400000000000100000


@dataclass(frozen=True)
class Mention:
    """One mention the test sends: where, by whom, and its text (unique, to find it in the history)."""

    platform: str
    channel: str
    user: str
    text: str
    message_id: str = ""  # Discord's message id or Slack's ts, once sent


@dataclass
class Outcome:
    """What one mention got: the texts of each bot message answering it, and its reply from the history."""

    mention: Mention
    messages: list[list[str]] = field(default_factory=list)
    stored_reply: str | None = None  # the assistant turn after its user turn
    stored: bool = False  # whether its user turn is in the history


@dataclass
class LoopLag:
    """How late a 10 ms timer fires on the loop: what every other task waits while the loop is blocked."""

    lags_s: list[float] = field(default_factory=list)

    async def tick(self) -> None:
        """Sample until cancelled."""
        while True:
            start = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            self.lags_s.append(max(0.0, time.perf_counter() - start - LAG_TICK_S))

    def percentile(self, share: float) -> float:
        """The ``share`` percentile (nearest rank) of the lags, in seconds."""
        ordered = sorted(self.lags_s) or [0.0]
        return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def busy_pattern() -> re.Pattern[str]:
    """BUSY with every placeholder as a number, whatever placeholders it has."""
    parts = [re.escape(literal) + (r"[\d,]+" if name is not None else "") for literal, name, _, _ in _fields(BUSY)]
    return re.compile("".join(parts))


def _fields(template: str) -> Iterable[tuple[str, str | None, str | None, str | None]]:
    return string.Formatter().parse(template)


def mentions() -> list[Mention]:
    """The 500 mentions in the order they are sent: round after round over all 50 channels."""
    sent: list[Mention] = []
    for round_number in range(MENTIONS_PER_CHANNEL):
        for channel in range(CHANNELS_PER_PLATFORM):
            for platform in ("discord", "slack"):
                n = len(sent)
                text = f"Question {n}: what is {n} plus {round_number}?"
                if platform == "discord":
                    sent.append(
                        Mention(platform, str(DISCORD_CHANNEL_BASE + channel), str(DISCORD_USER_BASE + n), text)
                    )
                else:
                    sent.append(Mention(platform, f"CLOAD{channel:04d}", f"ULOAD{n:05d}", text))
    return sent


def settings_for(discord: DiscordStandIn, slack: SlackStandIn, model: Path, data_dir: Path) -> Settings:
    """The settings ``bot run`` would read for both platforms on the stand-ins."""
    return Settings(
        model_path=model,
        engine="batching",
        max_new_tokens=MAX_NEW_TOKENS,
        max_waiting=MAX_WAITING,
        user_rate=None,
        data_dir=data_dir,
        discord_token=SecretStr(payloads.TOKEN),
        discord_api_base=discord.api_base,
        slack_bot_token=SecretStr(BOT_TOKEN),
        slack_app_token=SecretStr(APP_TOKEN),
        slack_api_url=slack.api_url,
    )


def with_test_budget(adapter: Adapter) -> Adapter:
    """The adapter ``load_adapters`` built, with the test's edit budget (nothing else changed)."""
    if isinstance(adapter, DiscordAdapter):
        return DiscordAdapter(replace(adapter.config, edits_per_second=EDITS_PER_SECOND))
    if isinstance(adapter, SlackAdapter):
        return SlackAdapter(replace(adapter.config, edits_per_minute=EDITS_PER_SECOND * 60))
    raise AssertionError(f"unexpected platform {adapter.platform}")


def message_limit(adapter: Adapter) -> int:
    """The longest message the adapter posts; a longer reply continues in further messages."""
    assert isinstance(adapter, DiscordAdapter | SlackAdapter)
    return adapter.config.message_limit


def count_submits(core: Core) -> list[Incoming]:
    """Every message an adapter hands the core, in order (to know when all 500 have arrived)."""
    submitted: list[Incoming] = []
    submit = core.submit

    def recorded(message: Incoming, *args: object, **kwargs: object) -> asyncio.Task[None]:
        submitted.append(message)
        return submit(message, *args, **kwargs)  # type: ignore[arg-type]

    core.submit = recorded  # type: ignore[method-assign]
    return submitted


@asynccontextmanager
async def serving(adapters: list[Adapter], core: Core, discord: DiscordStandIn) -> AsyncIterator[None]:
    """``run_until_stopped`` over both adapters until the block ends; then SIGTERM, as an operator stops it."""
    task = asyncio.create_task(run_until_stopped(adapters, core))
    try:
        await _started(task, adapters, discord)
        yield
    finally:
        if not task.done():
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, timeout=60)


async def _started(task: asyncio.Task[None], adapters: list[Adapter], discord: DiscordStandIn) -> None:
    slack = next(adapter for adapter in adapters if isinstance(adapter, SlackAdapter))

    async def both_ready() -> None:
        await discord.connected()
        await slack.ready.wait()

    ready = asyncio.create_task(both_ready())
    await asyncio.wait({task, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
        return
    ready.cancel()
    if task.done():
        task.result()  # raises why serving ended
    pytest.fail("the adapters did not start within 60 s")


async def send_all(to_send: list[Mention], discord: DiscordStandIn, slack: SlackStandIn) -> list[Mention]:
    """Send every mention on a schedule spread evenly over ``SEND_WINDOW_S``; return them with their message ids.

    Whatever is due goes out at once, together: while the loop is busy one send per loop turn would stretch
    the two seconds (to minutes when generation ran on a thread of this process and held the GIL).
    """
    loop = asyncio.get_running_loop()
    start, sent = loop.time(), list[Mention]()
    while len(sent) < len(to_send):
        due = min(len(to_send), math.floor((loop.time() - start) / SEND_WINDOW_S * len(to_send)) + 1)
        batch = [_send(mention, discord, slack) for mention in to_send[len(sent) : due]]
        sent.extend(await asyncio.gather(*batch))
        await asyncio.sleep(max(0.0, start + len(sent) * SEND_WINDOW_S / len(to_send) - loop.time()))
    return sent


async def _send(mention: Mention, discord: DiscordStandIn, slack: SlackStandIn) -> Mention:
    if mention.platform == "discord":
        return await send_discord(mention, discord)
    return await send_slack(mention, slack)


async def send_discord(mention: Mention, discord: DiscordStandIn) -> Mention:
    """A user's message in a Discord channel that mentions the bot."""
    author = payloads.user(int(mention.user), f"user{mention.user[-5:]}")
    content = f"{payloads.mention()} {mention.text}"
    message = payloads.message_create(
        content, channel_id=int(mention.channel), author=author, mentions=(payloads.bot_user(),)
    )
    await discord.dispatch("MESSAGE_CREATE", message)
    return replace(mention, message_id=message["id"])


async def send_slack(mention: Mention, slack: SlackStandIn) -> Mention:
    """A top-level Slack message mentioning the bot: it starts a thread (and a conversation) of its own."""
    ts = slack.next_ts()
    text = f"<@{BOT_USER_ID}> {mention.text}"
    await slack.send_event(message_event(text, channel=mention.channel, user=mention.user, ts=ts, kind="app_mention"))
    return replace(mention, message_id=ts)


def answers(sent: list[Mention], discord: DiscordStandIn, slack: SlackStandIn) -> tuple[dict[str, Outcome], int]:
    """Each mention's outcome (by its text) with the bot's messages answering it, and how many answered nothing."""
    by_reply_to: dict[tuple[str, str], list[list[str]]] = defaultdict(list)
    stray = 0
    for posted in discord.posted:
        if posted.replying_to is None:
            stray += 1  # every answer here is one message, and its first message replies to the mention
        else:
            by_reply_to["discord", posted.replying_to].append(posted.contents)
    for message in slack.messages.values():
        by_reply_to["slack", message.thread_ts or ""].append(message.texts)
    stray += len(by_reply_to.pop(("slack", ""), []))
    outcomes = {m.text: Outcome(m, by_reply_to.pop((m.platform, m.message_id), [])) for m in sent}
    return outcomes, stray + sum(len(messages) for messages in by_reply_to.values())


def read_history(database: Path, outcomes: dict[str, Outcome]) -> float:
    """Fill in each outcome's stored turns; return when (time.time()) the last generated reply was stored.

    Read with SQL rather than through the store: only the table has the time each turn was stored,
    and the manager stores a reply the moment its generation ends.
    """
    query = "SELECT platform, channel, thread, role, content, created_at FROM messages ORDER BY id"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(query).fetchall()
    asking: dict[tuple[str, str, str], Outcome] = {}  # each conversation's user turn still without a reply
    last_generated = 0.0
    for platform, channel, thread, role, content, created_at in rows:
        conversation = (platform, channel, thread)
        if role == "user":
            asking[conversation] = outcomes[content]
            asking[conversation].stored = True
        elif conversation in asking:
            asking.pop(conversation).stored_reply = content
            last_generated = max(last_generated, created_at)
    return last_generated


def expected_reply(outcome: Outcome, limits: dict[str, int]) -> list[str]:
    """The messages a finished reply shows: its stored text split at the platform's limit, rendered for it."""
    text = outcome.stored_reply or ""
    shown = text if text.strip() else EMPTY_REPLY
    render: Callable[[str, Kind], str] = discord_render if outcome.mention.platform == "discord" else slack_render
    return [render(part, Kind.REPLY) for part in split_message(shown, limits[outcome.mention.platform])]


def judge(outcome: Outcome, limits: dict[str, int], busy: re.Pattern[str]) -> tuple[str, str | None]:
    """("reply" or "busy", None) for a mention answered once as it should be; otherwise what went wrong."""
    finals = [versions[-1] for versions in outcome.messages]
    if len(finals) == 1 and busy.fullmatch(finals[0]):
        # A refused message is stored nowhere and its answer is never edited.
        problem = "busy but stored" if outcome.stored else None
        return "busy", problem if len(outcome.messages[0]) == 1 else "busy answer edited"
    if not outcome.stored:
        return "none", f"no reply stored; shown {finals!r}"
    expected = expected_reply(outcome, limits)
    return "reply", None if finals == expected else f"shows {finals!r}, finished with {expected!r}"


def last_delivery(discord: DiscordStandIn, slack: SlackStandIn) -> float:
    """When (time.monotonic()) either stand-in last received a post or an edit of a message."""
    discord_times = [r.at for r in discord.requests if r.method in ("POST", "PATCH") and "/messages" in r.path]
    slack_times = [call.at for call in slack.calls if call.method in ("chat.postMessage", "chat.update")]
    return max(discord_times + slack_times)


def heartbeat_lateness(discord: DiscordStandIn, now: float) -> list[float]:
    """How much later than its interval each heartbeat came (the time since the last one counts too)."""
    sessions = [*discord.sessions, *(session for session, _ in discord.closed_sessions)]
    beats = [*sorted(beat for session in sessions for beat in session.heartbeats), now]
    return [later - earlier - HEARTBEAT_INTERVAL_S for earlier, later in itertools.pairwise(beats)]


async def scrape(port: int) -> str:
    """The text of ``/metrics``, as Prometheus reads it."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        return await response.text()


def samples(scraped: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def check_scrapes(run: Run, judged: list[tuple[str, str | None]], sent: list[Mention]) -> None:
    """The scrapes agree with what the stand-ins saw: per platform, answered and busy as counted from the chats."""
    during, after = samples(run.scrape_during), samples(run.scrape_after)
    for platform in ("discord", "slack"):
        kinds = [kind for (kind, _), mention in zip(judged, sent, strict=True) if mention.platform == platform]
        for outcome, kind in (("answered", "reply"), ("busy", "busy")):
            key = ("bot_messages_total", (("outcome", outcome), ("platform", platform)))
            assert after.get(key, 0.0) == kinds.count(kind), f"{platform} {outcome}: {after.get(key)} scraped"
        # Every busy answer is given as its mention arrives: all of them were counted by the first scrape.
        busy = ("bot_messages_total", (("outcome", "busy"), ("platform", platform)))
        assert during.get(busy, 0.0) == kinds.count("busy")
    in_flight = during[("bot_replies_waiting", ())] + during[("bot_replies_generating", ())]
    answered = sum(
        value
        for (name, labels), value in during.items()
        if name == "bot_messages_total" and ("outcome", "answered") in labels
    )
    # One consistent snapshot: the replies already written plus those still in flight are all the replies.
    assert answered + in_flight == sum(1 for kind, _ in judged if kind == "reply")
    assert not any(
        name == "bot_messages_total" and ("outcome", bad) in labels
        for (name, labels) in after
        for bad in ("failed", "refused", "interrupted")
    )


def check_heartbeat(run: Run, warnings: list[str]) -> None:
    """One gateway session throughout, every heartbeat on time, and discord.py never fell behind."""
    lateness = run.lateness
    assert run.gateway_sessions == 1, f"the gateway session was replaced: {run.gateway_sessions} while serving"
    assert len(lateness) >= 2, f"only {len(lateness)} heartbeats"
    assert max(lateness) <= HEARTBEAT_GRACE_S, f"heartbeats up to {max(lateness):.2f} s late"
    assert not warnings, f"discord.gateway warned: {warnings[:3]}"


@dataclass
class Run:
    """Everything measured in one run, printed at its end."""

    started: float = field(default_factory=time.monotonic)
    sent_in_s: float = 0.0
    answered_in_s: float = 0.0
    lag: LoopLag = field(default_factory=LoopLag)
    lateness: list[float] = field(default_factory=list)
    gateway_sessions: int = 0  # sessions the stand-in saw before the stop (a late heartbeat makes discord.py reconnect)
    scrape_during: str = ""  # /metrics once all 500 mentions reached the core, replies still being written
    scrape_after: str = ""  # /metrics once every reply was written

    def report(self, kinds: dict[str, int], quiet_s: float) -> None:
        """Print the figures of the run (kept in the CI log with ``-s``)."""
        late = max(self.lateness, default=0.0)
        print(
            f"\nload: {kinds.get('reply', 0)} replies, {kinds.get('busy', 0)} busy answers of {MENTIONS} mentions;"
            f" sent in {self.sent_in_s:.1f} s, all answered {self.answered_in_s:.1f} s after the first;"
            f" quiet {quiet_s:.3f} s after the last generation (bound {QUIET_BOUND_S:.1f} s);"
            f" loop lag max {self.lag.percentile(1.0) * 1000:.0f} ms, p99 {self.lag.percentile(0.99) * 1000:.0f} ms;"
            f" {len(self.lateness)} heartbeats, latest {late:.2f} s past the interval;"
            f" wall time {time.monotonic() - self.started:.1f} s"
        )


async def run_load(
    settings: Settings, discord: DiscordStandIn, slack: SlackStandIn, run: Run
) -> tuple[list[Mention], dict[str, int]]:
    """Start the bot, send the mentions, wait until every one is answered and the core idle; stop the bot.

    Returns the mentions as sent and each platform's message length limit.
    """
    adapters = [with_test_budget(adapter) for adapter in load_adapters(settings)]
    limits = {adapter.platform: message_limit(adapter) for adapter in adapters}
    async with (
        open_core(settings, progress=False) as core,
        serve_observability(core, "127.0.0.1", 0) as endpoint,
        serving(adapters, core, discord),
    ):
        submitted = count_submits(core)
        ticking = asyncio.create_task(run.lag.tick())
        first = time.monotonic()
        sent = await send_all(mentions(), discord, slack)
        run.sent_in_s = time.monotonic() - first
        await wait_until(lambda: len(submitted) >= MENTIONS, ANSWERED_WITHIN_S)
        run.scrape_during = await scrape(bound_port(endpoint))
        await wait_until(lambda: core.in_flight == 0, ANSWERED_WITHIN_S)
        run.answered_in_s = time.monotonic() - first
        run.scrape_after = await scrape(bound_port(endpoint))
        ticking.cancel()
        run.lateness = heartbeat_lateness(discord, time.monotonic())
        run.gateway_sessions = len(discord.sessions) + len(discord.closed_sessions)
    return sent, limits


@asynccontextmanager
async def standins() -> AsyncIterator[tuple[DiscordStandIn, SlackStandIn]]:
    """Both stand-ins: Discord with the test's channels and a short heartbeat interval, and Slack."""
    async with AsyncExitStack() as stack:
        discord = DiscordStandIn(
            heartbeat_interval_ms=int(HEARTBEAT_INTERVAL_S * 1000),
            extra_channels=[DISCORD_CHANNEL_BASE + n for n in range(CHANNELS_PER_PLATFORM)],
        )
        await discord.start()
        stack.push_async_callback(discord.close)
        yield discord, await stack.enter_async_context(SlackStandIn())


async def test_500_mentions_from_50_channels_on_both_platforms(
    bundled_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = Run()
    caplog.set_level(logging.WARNING, logger="discord.gateway")
    async with standins() as (discord, slack):
        settings = settings_for(discord, slack, bundled_model, tmp_path / "data")
        wall_offset = time.time() - time.monotonic()  # the history stores time.time(), the stand-ins monotonic
        sent, limits = await run_load(settings, discord, slack, run)
        outcomes, unmatched = answers(sent, discord, slack)
        quiet_s = last_delivery(discord, slack) - (read_history(settings.history_db, outcomes) - wall_offset)

    judged = [judge(outcome, limits, busy_pattern()) for outcome in outcomes.values()]
    kinds = {kind: sum(1 for k, _ in judged if k == kind) for kind in ("reply", "busy", "none")}
    run.report(kinds, quiet_s)
    problems = [f"{text!r}: {problem}" for text, (_, problem) in zip(outcomes, judged, strict=True) if problem]
    assert not problems, f"{len(problems)} mentions not answered once:\n" + "\n".join(problems[:10])
    assert unmatched == 0, f"{unmatched} bot messages answer no mention"
    assert kinds["reply"] > 0 and kinds["busy"] > 0, kinds
    assert quiet_s <= QUIET_BOUND_S, f"final texts still arriving {quiet_s:.2f} s after the last generation"
    check_heartbeat(run, [record.getMessage() for record in caplog.records if record.name == "discord.gateway"])
    check_scrapes(run, judged, sent)
    # The figures the README's operations section quotes.
    for when, scraped in (("during the run", run.scrape_during), ("at the end", run.scrape_after)):
        shown = [line for line in scraped.splitlines() if not line.startswith("#") and "_created" not in line]
        print(f"/metrics {when}:\n" + "\n".join(line for line in shown if "_bucket" not in line))
