"""The engine that answers now, swappable while replies are in flight."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from model.engine import Engine, kv_cache_use


class EngineSlot:
    """Holds the current engine; a swap lets leased replies finish on the old one.

    Every reply leases the engine it starts on.  After ``swap`` new leases get the
    new engine and the old one is closed as soon as its last lease ends.
    """

    def __init__(self, engine: Engine) -> None:
        self._current = engine
        self._leases: Counter[int] = Counter()
        self._retired: dict[int, Engine] = {}

    @property
    def current(self) -> Engine:
        """The engine new replies will use."""
        return self._current

    @property
    def kv_cache_use(self) -> float | None:
        """How full the current engine's KV cache is, 0 to 1; None when that engine does not say."""
        return kv_cache_use(self._current)

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Engine]:
        """Use the current engine for the duration of one reply."""
        engine = self._current
        self._leases[id(engine)] += 1
        try:
            yield engine
        finally:
            self._leases[id(engine)] -= 1
            if self._leases[id(engine)] <= 0 and id(engine) in self._retired:
                del self._leases[id(engine)]
                await self._retired.pop(id(engine)).aclose()

    async def swap(self, engine: Engine) -> Engine:
        """Make ``engine`` current; return the old one (closed once drained)."""
        old, self._current = self._current, engine
        if self._leases[id(old)] > 0:
            self._retired[id(old)] = old
        else:
            self._leases.pop(id(old), None)
            await old.aclose()
        return old

    async def aclose(self) -> None:
        """Close the current engine and any still draining (call once no reply is in flight)."""
        retired, self._retired = list(self._retired.values()), {}
        for engine in [*retired, self._current]:
            await engine.aclose()
