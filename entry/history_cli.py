"""`bot history`: the admin's view of the stored conversations (list, export, prune); no model is loaded."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO, TypeVar

import typer

from bot.settings import Settings
from bot.storage import AdminHistoryStore, open_history_store
from bot.store import ConversationSummary, HistoryStoreError, Retention, StoredTurn
from bot.types import ConversationKey
from entry.startup import settings_or_exit

EXIT_FAILED = 1

T = TypeVar("T")

history_app = typer.Typer(
    help="Stored conversations: list them, export one as JSON lines, apply the retention now.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals would include settings and tokens
)


def parse_conversation(text: str) -> ConversationKey:
    """The conversation named as ``ConversationKey.__str__`` writes it: ``platform:channel[/thread]``."""
    platform, colon, rest = text.partition(":")
    channel, slash, thread = rest.partition("/")
    if not (platform and colon and channel) or (slash and not thread):
        raise typer.BadParameter(f"{text!r} is not a conversation: write platform:channel or platform:channel/thread")
    return ConversationKey(platform, channel, thread or None)


def turn_record(turn: StoredTurn) -> str:
    """One exported turn as a JSON line (without the newline); ``created_at`` in ISO 8601, UTC."""
    created = datetime.fromtimestamp(turn.created_at, UTC).isoformat().replace("+00:00", "Z")
    record = {"role": turn.role, "content": turn.content, "created_at": created, "interrupted": turn.interrupted}
    return json.dumps(record, ensure_ascii=False)


def _with_store(settings: Settings, action: Callable[[AdminHistoryStore], Awaitable[T]], empty: T) -> T:
    """``action`` on the settings' history database (BOT_DATABASE_URL's, else the SQLite file), or ``empty`` where
    there is no SQLite file yet (none is created)."""
    url = settings.database_url.get_secret_value() if settings.database_url else None
    path = settings.history_db
    if url is None and not path.exists():
        return empty
    retention = Retention(settings.history_max_turns, settings.history_max_age_days)

    async def run() -> T:
        store = await open_history_store(url, path, retention, prune=False)
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except HistoryStoreError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_FAILED) from None


@history_app.command("list")
def list_conversations() -> None:
    """Every stored conversation with its turn count and last activity, the most recent first."""
    summaries: list[ConversationSummary] = _with_store(settings_or_exit(), lambda store: store.conversations(), [])
    if not summaries:
        typer.echo("No conversations stored.")
        return
    for summary in summaries:
        last = datetime.fromtimestamp(summary.last_activity, UTC).isoformat(timespec="seconds")
        typer.echo(f"{summary.key}\t{summary.turns} turns\tlast {last.replace('+00:00', 'Z')}")


@history_app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be removed.")] = False,
) -> None:
    """Apply the retention (BOT_HISTORY_MAX_TURNS, BOT_HISTORY_MAX_AGE_DAYS) to every conversation now."""
    removed = _with_store(settings_or_exit(), lambda store: store.prune(dry_run=dry_run), 0)
    typer.echo(f"{'Would remove' if dry_run else 'Removed'} {removed} turn{'' if removed == 1 else 's'}.")


@history_app.command()
def export(
    conversation: Annotated[
        ConversationKey,
        typer.Argument(
            parser=parse_conversation, help="platform:channel or platform:channel/thread", metavar="CONVERSATION"
        ),
    ],
    output: Annotated[Path | None, typer.Option(help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print one conversation as JSON lines: role, content, created_at (UTC), interrupted."""
    settings = settings_or_exit()

    async def write(store: AdminHistoryStore) -> int:
        count = await store.count(conversation)
        if count == 0:
            return 0
        if output is None:
            await _write_turns(store, conversation, sys.stdout)
        else:
            await _write_file(store, conversation, output)
        return count

    if _with_store(settings, write, 0) == 0:
        typer.echo(f"No conversation {conversation} in {settings.history_db}; `bot history list` shows them.", err=True)
        raise typer.Exit(EXIT_FAILED)


async def _write_turns(store: AdminHistoryStore, key: ConversationKey, stream: TextIO) -> None:
    async for turn in store.turns(key):
        stream.write(turn_record(turn) + "\n")


async def _write_file(store: AdminHistoryStore, key: ConversationKey, output: Path) -> None:
    try:
        with _replacing(output) as stream:
            await _write_turns(store, key, stream)
    except OSError as error:
        typer.echo(f"Cannot write {output}: {error}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


@contextmanager
def _replacing(output: Path) -> Iterator[TextIO]:
    """A file beside ``output`` that replaces it once complete: a failed export never leaves a half file there."""
    descriptor, partial = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            yield stream
        os.replace(partial, output)
    finally:
        Path(partial).unlink(missing_ok=True)  # only left after a failure: the rename took it otherwise
