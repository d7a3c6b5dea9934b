"""Several bot processes on one PostgreSQL: each message answered once, in order, dead processes' rows taken over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import psycopg
import pytest

from bot.inbox import InboxError
from bot.pg_inbox import LIVE_CLASS, PostgresInbox
from bot.pg_migrate import connect, migrate, migrations
from bot.storage import open_history_store, open_inbox
from bot.store import HistoryStoreError, Retention
from bot.types import ConversationKey, Identity, Incoming
from tests.postgres import PostgresServer, postgres_server, postgres_url  # noqa: F401

KEY = ConversationKey("slack", "C1")
AUTHOR = Identity("slack", "U1")
SECRET_URL = "postgresql://bot:s3cr3t-pw@127.0.0.1:{port}/history"

Opener = Callable[..., Awaitable[PostgresInbox]]


def message(message_id: str, key: ConversationKey = KEY) -> Incoming:
    return Incoming(key, AUTHOR, f"text of {message_id}", message_id=message_id)


@pytest.fixture
async def process(postgres_url: str) -> AsyncIterator[Opener]:  # noqa: F811
    """``await process(**options)``: the inbox of one more bot process on the test's database."""
    opened: list[PostgresInbox] = []

    async def open_one(**options: float) -> PostgresInbox:
        opened.append(await PostgresInbox.open(postgres_url, **options))  # type: ignore[arg-type]
        return opened[-1]

    yield open_one
    for inbox in opened:
        await inbox.aclose()


async def crash(url: str, inbox: PostgresInbox) -> None:
    """What ``kill -9`` does to a process's connections: the server drops them (and its liveness lock), waited for."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid"
            " AND objid = %s::oid AND objsubid = 2",
            (LIVE_CLASS, inbox.instance),
        )


async def still_waiting(turn: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """``turn`` started, and not over after several polls."""
    task = asyncio.create_task(turn)
    await asyncio.sleep(0.3)
    assert not task.done()
    return task


async def test_a_message_delivered_to_two_processes_is_recorded_once(process: Opener) -> None:
    first, second = await process(), await process()
    row = first.accept(message("m1"))
    assert row is not None
    assert second.accept(message("m1")) is None
    assert second.accept(message("m1", ConversationKey("slack", "C2"))) is not None  # ids are per channel
    assert first.accept(Incoming(KEY, AUTHOR, "no id")) != first.accept(Incoming(KEY, AUTHOR, "no id"))


async def test_a_later_row_waits_for_an_earlier_row_of_another_live_process(process: Opener) -> None:
    first, second = await process(), await process()
    earlier, later = first.accept(message("m1")), second.accept(message("m2"))
    assert earlier is not None and later is not None and earlier < later
    await first.turn(KEY, earlier)  # nothing before it
    await second.turn(ConversationKey("slack", "C2"), later)  # another conversation never waits
    waiting = await still_waiting(second.turn(KEY, later))
    first.done(earlier)
    await asyncio.wait_for(waiting, 10)
    await second.turn(KEY, None)  # not recorded: waits for nothing left unfinished


async def test_rows_of_a_crashed_process_are_not_waited_for(process: Opener, postgres_url: str) -> None:  # noqa: F811
    first, second = await process(), await process()
    first.accept(message("m1"))
    later = second.accept(message("m2"))
    assert later is not None
    waiting = await still_waiting(second.turn(KEY, later))
    await crash(postgres_url, first)
    await asyncio.wait_for(waiting, 10)
    assert first.accept(message("m1")) is None  # its rows still de-duplicate


async def test_rows_of_a_process_whose_heartbeat_stopped_are_not_waited_for(
    process: Opener,
    postgres_url: str,  # noqa: F811
) -> None:
    first = await process(heartbeat_s=3600.0)
    second = await process(dead_after_s=5.0)
    first.accept(message("m1"))
    later = second.accept(message("m2"))
    waiting = await still_waiting(second.turn(KEY, later))
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await admin.execute(
            "UPDATE instances SET seen_at = now() - interval '1 minute' WHERE id = %s", (first.instance,)
        )
    await asyncio.wait_for(waiting, 10)


async def test_a_dead_processes_rows_are_claimed_once_by_two_starting_together(
    process: Opener,
    postgres_url: str,  # noqa: F811
) -> None:
    dead, alive = await process(), await process()
    rows = [dead.accept(message(f"m{number}", ConversationKey("slack", f"C{number % 3}"))) for number in range(30)]
    own = alive.accept(message("mine"))
    assert dead.unfinished("slack") == [] and alive.unfinished("slack") == []  # both owners alive
    await crash(postgres_url, dead)
    first, second = await process(), await process()
    claimed = await asyncio.gather(*(asyncio.to_thread(inbox.unfinished, "slack") for inbox in (first, second)))
    ids = [[left.id for left in batch] for batch in claimed]
    assert sorted(ids[0] + ids[1]) == rows and own not in ids[0] + ids[1]
    assert all(batch == sorted(batch) for batch in ids)  # oldest first
    assert first.unfinished("slack") == [] and second.unfinished("slack") == []
    assert first.unfinished("discord") == []


async def test_a_closed_process_leaves_its_unfinished_rows_to_the_next(process: Opener) -> None:
    before = await process()
    row = before.accept(message("m1"))
    await before.aclose()
    after = await process()
    [left] = after.unfinished("slack")
    assert (left.id, left.message.text, left.message.author) == (row, "text of m1", AUTHOR)


async def test_migrations_run_by_two_processes_at_once_are_applied_once(postgres_url: str) -> None:  # noqa: F811
    connections = [await connect(postgres_url) for _ in range(2)]
    try:
        applied = await asyncio.gather(*(migrate(connection) for connection in connections))
        latest = [migration.version for migration in migrations()]
        assert sorted(applied, key=len) == [[], latest]
        cursor = await connections[0].execute("SELECT version FROM schema_version ORDER BY version")
        assert [row[0] for row in await cursor.fetchall()] == latest
        assert await migrate(connections[0]) == []
    finally:
        for connection in connections:
            await connection.close()


async def test_a_database_of_a_newer_bot_is_refused(postgres_url: str) -> None:  # noqa: F811
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
        await migrate(admin)
        await admin.execute("INSERT INTO schema_version (version, name) VALUES (9999, '9999_future.sql')")
    with pytest.raises(HistoryStoreError, match="newer than this bot"):
        await open_history_store(postgres_url, None, Retention())  # type: ignore[arg-type]


async def test_a_server_that_is_down_is_named_without_the_password(postgres_server: PostgresServer) -> None:  # noqa: F811
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute("CREATE ROLE bot LOGIN PASSWORD 'right-password'")
    wrong = SECRET_URL.format(port=postgres_server.port)
    with pytest.raises(HistoryStoreError) as refused:
        await open_history_store(wrong, None, Retention())  # type: ignore[arg-type]
    assert f"127.0.0.1:{postgres_server.port}/history" in str(refused.value)
    assert "s3cr3t-pw" not in str(refused.value)
    down = SECRET_URL.format(port=1)
    with pytest.raises(InboxError, match=r"127\.0\.0\.1:1/history") as unreachable:
        await open_inbox(down, "unused")
    assert "s3cr3t-pw" not in str(unreachable.value)
    with pytest.raises(InboxError, match="notaport") as bad_port:
        await open_inbox("postgresql://bot:s3cr3t-pw@127.0.0.1:notaport/history", "unused")
    assert "s3cr3t-pw" not in str(bad_port.value)
    with pytest.raises(InboxError, match="must be a PostgreSQL URL") as malformed:
        await open_inbox("mysql://bot:s3cr3t-pw@host/db", "unused")
    assert "s3cr3t-pw" not in str(malformed.value)


async def test_a_process_whose_connection_dropped_takes_its_lock_again_and_keeps_its_rows(
    process: Opener,
    postgres_url: str,  # noqa: F811
) -> None:
    running = await process(heartbeat_s=0.3)
    row = running.accept(message("m1"))
    await crash(postgres_url, running)  # only its liveness connection: the process itself goes on
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as stale:
        # Its old session, half-open, still holds the lock when the heartbeat reconnects.
        taken = await stale.execute("SELECT pg_try_advisory_lock(%s, %s)", (LIVE_CLASS, running.instance))
        assert await taken.fetchone() == (True,)
        await asyncio.sleep(1.0)  # a few beats find the lock held
    for _ in range(100):  # the old session is gone: the next beats take the lock again
        await asyncio.sleep(0.05)
        if await holds_lock(postgres_url, running):
            break
    assert await holds_lock(postgres_url, running)
    starting = await process()
    assert starting.unfinished("slack") == []  # alive again: its row stays its own
    running.done(row)  # type: ignore[arg-type]


async def holds_lock(url: str, inbox: PostgresInbox) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        cursor = await admin.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::oid"
            " AND objid = %s::oid AND objsubid = 2",
            (LIVE_CLASS, inbox.instance),
        )
        row = await cursor.fetchone()
    return bool(row and row[0])
