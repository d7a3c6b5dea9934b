"""`python -m bot`: the same as the `bot` command."""

from bot.cli import app

app(prog_name="bot")
