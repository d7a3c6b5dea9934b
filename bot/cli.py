"""The `bot` command line: run, chat, ask."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from adapters.console import ConsoleChat, answer_once
from adapters.launch import MissingExtra, PlatformStartupError, configured_platforms, load_servers, run_until_stopped
from bot.app import BotServices, open_services
from bot.export_cli import export as export_command
from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings
from bot.trimming import ContextTooSmall
from model.engine import EngineError, ModelLoadError

EXIT_BAD_SETTINGS = 2

app = typer.Typer(
    help="A self-hosted team-chat bot answering with a local OpenVINO model.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals would include settings and tokens
)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as error:
        typer.echo(f"Invalid settings:\n{error}", err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    configure_logging(settings.log_level, settings.secrets())
    return settings


def _serve(settings: Settings, session: Callable[[BotServices], Awaitable[None]], *, persistent: bool) -> None:
    async def main() -> None:
        typer.echo("Loading the model…", err=True)
        async with open_services(settings, persistent=persistent, follow_exports=persistent) as services:
            await session(services)

    try:
        asyncio.run(main())
    except ModelLoadError as error:
        typer.echo(f"Model error: {error}", err=True)
        raise typer.Exit(1) from None
    except SettingsError as error:  # a platform found a setting it needs missing or wrong
        typer.echo(f"Invalid settings:\n{error}", err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    except (PlatformStartupError, EngineError, ContextTooSmall) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None


@app.callback(invoke_without_command=True)
def main(context: typer.Context) -> None:
    """With no command: `bot run`."""
    if context.invoked_subcommand is None:
        run()


@app.command()
def run() -> None:
    """Start every platform whose tokens are set; the console chat when none are."""
    settings = _settings()
    platforms = configured_platforms(settings)
    if not platforms:
        chat()
        return
    try:
        servers = load_servers(platforms)
    except MissingExtra as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    _serve(settings, lambda bot: run_until_stopped(servers, bot.manager, settings, bot.admin), persistent=True)


@app.command()
def chat() -> None:
    """Chat in the terminal; replies stream as they are generated."""
    settings = _settings()
    _serve(settings, lambda bot: ConsoleChat(bot.manager, sys.stdout, bot.admin).run(), persistent=True)


@app.command()
def ask(question: Annotated[str, typer.Argument(help="The question to answer.")]) -> None:
    """Print one answer and exit."""
    settings = _settings()
    _serve(settings, lambda bot: answer_once(bot.manager, question, sys.stdout), persistent=False)


app.command("export")(export_command)
