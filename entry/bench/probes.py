"""What the benchmarks observe: event-loop lag, resident memory, percentiles."""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence

import psutil

TICK_S = 0.010


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` (0-1) percentile of ``values`` by the nearest-rank method (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


class LoopLag:
    """How late a 10 ms timer fires on the running loop: what every other task waits when the loop is busy."""

    def __init__(self) -> None:
        self.lags_s: list[float] = []

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[LoopLag]:
        """Sample the lag for the duration of the block."""
        task = asyncio.create_task(self._tick())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(TICK_S)
            self.lags_s.append(max(0.0, time.perf_counter() - start - TICK_S))

    @property
    def p99_ms(self) -> float:
        """The 99th percentile lag in milliseconds."""
        return percentile(self.lags_s, 0.99) * 1000

    @property
    def worst_ms(self) -> float:
        """The worst lag in milliseconds."""
        return max(self.lags_s, default=0.0) * 1000


def tree_rss_bytes() -> int:
    """Resident memory of this process and every process it started (an engine process included)."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child may exit while we look
            total += child.memory_info().rss
    return total


class PeakMemory:
    """The highest resident memory of the process tree, sampled on a thread while the block runs."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.peak_bytes = 0
        self._interval_s = interval_s
        self._stop = threading.Event()

    @contextlib.contextmanager
    def sampling(self) -> Iterator[PeakMemory]:
        """Sample until the block ends."""
        self._stop.clear()
        thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes())

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes())
            self._stop.wait(self._interval_s)
