"""Which platforms `bot run` starts, each from its own settings, and running them until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
from collections.abc import Awaitable
from typing import Any

from adapters.base import Adapter
from bot.core import Core
from bot.settings import Settings, SettingsError
from entry.observability import serve_observability

log = logging.getLogger(__name__)

# After SIGTERM, how long platforms may take to finish replies and disconnect.
STOP_DEADLINE_S = 30.0
# platform name -> (adapter module, pip extra that installs its library)
PLATFORMS = {"Discord": ("adapters.discord", "discord"), "Slack": ("adapters.slack", "slack")}


class MissingExtra(RuntimeError):
    """A platform is configured but its library is not installed."""


def configured_platforms(settings: Settings) -> list[str]:
    """Platforms whose tokens are set."""
    wanted = {"Discord": settings.discord_token, "Slack": settings.slack_bot_token}
    return [name for name, token in wanted.items() if token is not None]


def load_adapters(settings: Settings) -> list[Adapter]:
    """An adapter for each configured platform, built from that platform's settings alone.

    Raises ``MissingExtra`` naming the extra to install when a platform's library is
    missing, and ``SettingsError`` when a platform lacks a setting it needs.
    """
    adapters: list[Adapter] = []
    for name in configured_platforms(settings):
        module_name, extra = PLATFORMS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise MissingExtra(
                f"{name} is configured but its library is missing ({error.name}): pip install -e '.[{extra}]'"
            ) from error
        adapters.append(BUILDERS[name](module, settings))
    return adapters


def _discord(module: Any, settings: Settings) -> Adapter:
    assert settings.discord_token is not None  # configured_platforms checked it
    try:
        config = module.DiscordConfig(
            token=settings.discord_token.get_secret_value(),
            channels=frozenset(settings.discord_channels),
            api_base=settings.discord_api_base,
            gateway_url=settings.discord_gateway_url,
            catchup_max_messages=settings.catchup_max_messages,
            shard_count=settings.discord_shard_count,
            shard_ids=tuple(int(shard) for shard in settings.discord_shard_ids),  # Settings checked they are numbers
        )
    except ValueError as error:  # its messages name the variables (DISCORD_SHARD_COUNT, DISCORD_SHARD_IDS)
        raise SettingsError(str(error)) from None
    adapter: Adapter = module.DiscordAdapter(config)
    return adapter


def _slack(module: Any, settings: Settings) -> Adapter:
    needed = {"SLACK_BOT_TOKEN": settings.slack_bot_token}
    if settings.slack_mode == "socket":
        needed["SLACK_APP_TOKEN"] = settings.slack_app_token
    else:
        needed["SLACK_SIGNING_SECRET"] = settings.slack_signing_secret
    missing = [name for name, value in needed.items() if value is None]
    if missing:
        raise SettingsError("\n".join(f"{name}: required in Slack {settings.slack_mode} mode" for name in missing))
    secrets = {name: value.get_secret_value() if value else None for name, value in needed.items()}
    config = module.SlackConfig(
        bot_token=secrets["SLACK_BOT_TOKEN"],
        app_token=secrets.get("SLACK_APP_TOKEN"),
        signing_secret=secrets.get("SLACK_SIGNING_SECRET"),
        mode=settings.slack_mode,
        port=settings.slack_port,
        channels=frozenset(settings.slack_channels),
        api_url=settings.slack_api_url,
        catchup_max_messages=settings.catchup_max_messages,
        assistant_greeting=settings.slack_assistant_greeting,
        suggested_prompts=tuple(settings.slack_suggested_prompts),
        edits_per_minute=settings.slack_edits_per_minute,
    )
    adapter: Adapter = module.SlackAdapter(config)
    return adapter


BUILDERS = {"Discord": _discord, "Slack": _slack}


async def run_observed(adapters: list[Adapter], core: Core, settings: Settings) -> None:
    """``run_until_stopped`` with ``/metrics`` and ``/healthz`` served beside it when ``BOT_METRICS_PORT`` is set.

    The core exists only once its model has loaded, so the model counts as loaded from here
    until the platforms have stopped; each platform counts once its adapter says it is connected.
    """
    for adapter in adapters:
        core.health.expect(adapter.platform)
    core.health.model_loaded(True)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if settings.metrics_port is not None:
                await stack.enter_async_context(serve_observability(core, settings.metrics_host, settings.metrics_port))
            await run_until_stopped(adapters, core)
    finally:
        core.health.model_loaded(False)


async def run_until_stopped(adapters: list[Adapter], core: Core, deadline_s: float = STOP_DEADLINE_S) -> None:
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
    log.info("Serving %s; SIGTERM or Ctrl-C stops", ", ".join(adapter.platform for adapter in adapters))
    tasks = [asyncio.create_task(_stop_all_if_one_fails(adapter.serve(core, stop), stop)) for adapter in adapters]
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
