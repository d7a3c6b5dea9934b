"""What every `bot` command does first: read the settings and set up logging that redacts every secret."""

from __future__ import annotations

import typer

from bot.logs import configure_logging
from bot.settings import Settings, SettingsError, load_settings

EXIT_BAD_SETTINGS = 2


def settings_or_exit() -> Settings:
    """The settings, with logging configured from them; exit with status 2 and the reasons when they are invalid."""
    try:
        settings = load_settings()
    except SettingsError as error:
        typer.echo(f"Invalid settings:\n{error}", err=True)
        raise typer.Exit(EXIT_BAD_SETTINGS) from None
    configure_logging(settings.log_level, settings.secrets(), settings.log_format)
    return settings
