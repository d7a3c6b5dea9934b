"""Which platforms `bot run` starts, and running them until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from bot.admin import AdminActions
from bot.manager import ConversationManager
from bot.settings import Settings

log = logging.getLogger(__name__)

Serve = Callable[[ConversationManager, Settings, AdminActions, asyncio.Event], Awaitable[None]]

# After SIGTERM, how long platforms may take to finish replies and disconnect.
STOP_DEADLINE_S = 30.0
# platform name -> (adapter module, pip extra that installs its library)
PLATFORMS = {"Discord": ("adapters.discord", "discord"), "Slack": ("adapters.slack", "slack")}


class PlatformStartupError(RuntimeError):
    """A platform refused to start (rejected credentials, for example); the message says why."""


class MissingExtra(RuntimeError):
    """A platform is configured but its library is not installed."""


def configured_platforms(settings: Settings) -> list[str]:
    """Platforms whose tokens are set."""
    wanted = {"Discord": settings.discord_token, "Slack": settings.slack_bot_token}
    return [name for name, token in wanted.items() if token is not None]


def load_servers(platforms: list[str]) -> dict[str, Serve]:
    """Import each platform's adapter; explain which extra to install when one is missing."""
    servers: dict[str, Serve] = {}
    for name in platforms:
        module_name, extra = PLATFORMS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise MissingExtra(
                f"{name} is configured but its library is missing ({error.name}): pip install -e '.[{extra}]'"
            ) from error
        servers[name] = module.serve
    return servers


async def run_until_stopped(
    servers: dict[str, Serve],
    manager: ConversationManager,
    settings: Settings,
    admin: AdminActions,
    deadline_s: float = STOP_DEADLINE_S,
) -> None:
    """Run every platform together until SIGTERM or Ctrl-C, then stop them gracefully.

    Each platform gets ``deadline_s`` to finish its replies and disconnect (also one still
    starting up, which may be waiting on a slow server); a second signal cuts that short.
    """
    stop, force = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (force if stop.is_set() else stop).set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal)
    log.info("Serving %s; SIGTERM or Ctrl-C stops", ", ".join(servers))
    tasks = [
        asyncio.create_task(_stop_all_if_one_fails(serve(manager, settings, admin, stop), stop))
        for serve in servers.values()
    ]
    try:
        await _until_done(tasks, stop, force, deadline_s)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    failures = [error for task in tasks if not task.cancelled() and (error := task.exception()) is not None]
    if failures:
        raise failures[0]
    log.info("Stopped")


async def _until_done(
    tasks: list[asyncio.Task[None]], stop: asyncio.Event, force: asyncio.Event, deadline_s: float
) -> None:
    everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait({everything, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if everything.done():
        return
    forced: asyncio.Future[Any] = asyncio.ensure_future(force.wait())
    await asyncio.wait({everything, forced}, timeout=deadline_s, return_when=asyncio.FIRST_COMPLETED)
    forced.cancel()
    if not everything.done():
        log.warning("Not everything stopped in time; cancelling what is left")
        for task in tasks:
            task.cancel()
        await everything


async def _stop_all_if_one_fails(serving: Awaitable[None], stop: asyncio.Event) -> None:
    try:
        await serving
    except asyncio.CancelledError:
        raise
    except BaseException:
        log.exception("A platform failed; stopping the others")
        stop.set()
        raise
