"""`python -m entry`: the same as the `bot` command."""

from entry.cli import app

app(prog_name="bot")
