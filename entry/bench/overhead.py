"""P3: the bot's own time per message, and how free the event loop stays while replies generate."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from contextlib import AbstractAsyncContextManager

from bot.admin import AdminPolicy, NoAdminActions
from bot.admission import Admission, AdmissionLimits
from bot.core import Core
from bot.surface import UNPACED, Kind
from bot.types import ConversationKey, Identity, Incoming
from entry.bench.concurrency import manager_on
from entry.bench.probes import LoopLag
from entry.bench.report import Figure
from entry.bench.workload import QUESTIONS
from model.engine import Engine

OVERHEAD_TARGET_MS = 5.0
LOOP_LAG_TARGET_MS = 20.0


class TimingSurface:
    """A channel in memory, as the in-memory adapter's, that notes when the first reply text left the bot."""

    pacing = UNPACED

    def __init__(self) -> None:
        self.first_reply_at = 0.0
        self.texts: list[str] = []

    async def send(self, text: str, kind: Kind) -> object:
        if kind is Kind.REPLY and not self.first_reply_at:
            self.first_reply_at = time.perf_counter()
        self.texts.append(text)
        return len(self.texts) - 1

    async def edit(self, handle: object, text: str, kind: Kind) -> None:
        assert isinstance(handle, int)
        self.texts[handle] = text

    def indicate(self, kind: Kind) -> AbstractAsyncContextManager[object]:
        return contextlib.nullcontext()

    async def finish(self, *, complete: bool) -> None:
        """Nothing stays open after a reply here."""


def core_on(engine: Engine, max_new_tokens: int) -> Core:
    """The core as the bot builds it, over ``engine``, with nobody's rate limited."""
    manager, _ = manager_on(engine, max_new_tokens)
    admission = Admission(AdmissionLimits(user_rate=None, max_waiting=64))
    return Core(manager, AdminPolicy({}), NoAdminActions(), admission=admission)


async def own_time_ms(core: Core, index: int) -> tuple[float, float]:
    """One message from entering the core to its first reply text, minus the engine's time to first token."""
    key = ConversationKey("memory", f"p3-{index}")
    surface = TimingSurface()
    started = time.perf_counter()
    await core.submit(Incoming(key, Identity("memory", f"user-{index}"), QUESTIONS[index % len(QUESTIONS)]), surface)
    stats = core.manager.last_stats(key)
    if stats is None or not surface.first_reply_at:
        raise RuntimeError("the benchmark's reply came back without text or measurements")
    return (surface.first_reply_at - started - stats.ttft_s) * 1000, stats.ttft_s * 1000


async def loop_lag_while_generating(core: Core, replies: int) -> LoopLag:
    """The loop's lag while ``replies`` replies generate at once through the core."""
    lag = LoopLag()
    async with lag.watching():
        asks = [
            core.submit(Incoming(ConversationKey("memory", f"lag-{i}"), Identity("memory", f"lag-{i}"), q), surface)
            for i, (q, surface) in enumerate((q, TimingSurface()) for q in QUESTIONS[:replies])
        ]
        await asyncio.gather(*asks)
    return lag


async def p3_overhead(engine: Engine, rounds: int, max_new_tokens: int) -> list[Figure]:
    """The core's own share of the time to first text, and the loop's lag under eight streaming replies."""
    core = core_on(engine, max_new_tokens)
    try:
        measured = [await own_time_ms(core, i) for i in range(rounds)]
        lag = await loop_lag_while_generating(core, len(QUESTIONS))
    finally:
        await core.aclose()
    own = statistics.median(m[0] for m in measured)
    engine_ttft = statistics.median(m[1] for m in measured)
    return [
        Figure(
            "P3",
            "the bot's own time from a message to its first text, minus the engine's time to first token (median)",
            f"{own:.1f} ms",
            f"{engine_ttft:.0f} ms engine time to first token",
            None,
            f"≤ {OVERHEAD_TARGET_MS:g} ms",
            own <= OVERHEAD_TARGET_MS,
            note=f"{rounds} messages, one at a time, through `Core.submit` as the in-memory adapter sends them.",
        ),
        Figure(
            "P3",
            f"event-loop lag while {len(QUESTIONS)} replies generate (p99 of a 10 ms timer)",
            f"{lag.p99_ms:.1f} ms",
            f"worst {lag.worst_ms:.1f} ms",
            None,
            f"≤ {LOOP_LAG_TARGET_MS:g} ms",
            lag.p99_ms <= LOOP_LAG_TARGET_MS,
        ),
    ]
