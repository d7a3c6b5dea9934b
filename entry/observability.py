"""The operations endpoint: ``GET /metrics`` for Prometheus and ``GET /healthz`` for a readiness probe.

It runs on the bot's own asyncio loop (aiohttp's server), so a scrape reads the core's
counters and gauges where they live, with no locks.  Off unless ``BOT_METRICS_PORT`` is
set; it listens on ``BOT_METRICS_HOST`` (127.0.0.1 by default: metrics name channels and
platforms, so exposing them is a choice).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from adapters.base import PlatformStartupError
from bot.core import Core

log = logging.getLogger(__name__)

HEALTH_READY = 200
HEALTH_NOT_READY = 503


def observability_app(core: Core) -> web.Application:
    """The aiohttp application answering ``/metrics`` and ``/healthz`` from ``core``."""

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = core.metrics.render()
        # Prometheus' content type carries parameters (version, charset), which aiohttp wants as a header.
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        status = HEALTH_READY if core.health.ready else HEALTH_NOT_READY
        return web.json_response(core.health.report(), status=status)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


@asynccontextmanager
async def serve_observability(core: Core, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` until the block exits (port 0: any free port).

    Yields the runner, whose ``addresses`` tell the port actually bound.  An address that
    cannot be bound (a port in use) raises ``PlatformStartupError`` before the bot answers anyone.
    """
    runner = web.AppRunner(observability_app(core), access_log=None)  # scrapes every few seconds: no access log
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as error:
            raise PlatformStartupError(f"Cannot serve metrics on {host}:{port} (BOT_METRICS_PORT): {error}") from None
        log.info("Metrics on http://%s:%d/metrics, health on /healthz", host, bound_port(runner))
        yield runner
    finally:
        await runner.cleanup()


def bound_port(runner: web.AppRunner) -> int:
    """The port the endpoint listens on (useful when it was started on port 0)."""
    address = runner.addresses[0]
    return int(address[1])
