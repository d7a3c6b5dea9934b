"""Which platforms `bot run` starts, and running them until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable

from bot.admin import AdminActions
from bot.manager import ConversationManager
from bot.settings import Settings

log = logging.getLogger(__name__)

Serve = Callable[[ConversationManager, Settings, AdminActions, asyncio.Event], Awaitable[None]]

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
    servers: dict[str, Serve], manager: ConversationManager, settings: Settings, admin: AdminActions
) -> None:
    """Run every platform together; SIGTERM or Ctrl-C asks each to stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    log.info("Serving %s; SIGTERM or Ctrl-C stops", ", ".join(servers))
    try:
        results = await asyncio.gather(
            *(_stop_all_if_one_fails(serve(manager, settings, admin, stop), stop) for serve in servers.values()),
            return_exceptions=True,
        )
    finally:
        stop.set()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise failures[0]
    log.info("Stopped")


async def _stop_all_if_one_fails(serving: Awaitable[None], stop: asyncio.Event) -> None:
    try:
        await serving
    except BaseException:
        log.exception("A platform failed; stopping the others")
        stop.set()
        raise
