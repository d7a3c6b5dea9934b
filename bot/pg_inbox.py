"""The inbox in PostgreSQL, shared by several bot processes: each message answered once, in order.

The same semantics as ``bot.inbox.SQLiteInbox``, plus what several processes need:

- **Once**: ``(platform, channel, message_id)`` is unique; ``accept`` is ``INSERT ... ON CONFLICT
  DO NOTHING RETURNING id``, so a message delivered to two processes gets a row in one only.
- **Synchronous accept and done**: ``Core.submit`` must not await (its ordering depends on it),
  so they run on a synchronous psycopg connection: one loopback round trip (well under a
  millisecond) during which the event loop waits.  Everything else is async.
- **Owners and liveness**: each process registers in ``instances`` and owns the rows it
  accepts.  It is alive while it (a) holds a session advisory lock on its own connection, which
  PostgreSQL releases the moment that connection drops (``kill -9``, a crash), and (b) keeps
  its heartbeat (``seen_at``, every ``heartbeat_s``) fresher than ``dead_after_s`` (a hung
  process, a machine gone without closing its socket).  Connect directly or through a session
  pooler: a transaction pooler (PgBouncer's transaction mode) cannot keep session locks.
- **Claims**: ``unfinished(platform)`` at start takes over the rows of owners whose session is gone, in
  one ``UPDATE ... RETURNING`` under a transaction-level advisory lock: two processes starting together
  take turns, and the second sees the first's rows as owned by a live process, so never both take a row.
- **Order across processes**: rows are ordered by their id (one sequence).  ``turn()`` returns
  once every earlier unfinished row of the conversation owned by another live process is done;
  rows of dead owners are ignored.  It polls every ``TURN_POLL_S`` on an async connection
  rather than LISTEN/NOTIFY: a wait is rare (two processes answering one conversation at once),
  a poll is one indexed query, owners that die must be noticed anyway (they notify nothing),
  and polling needs no extra listening connection per process.
  The window left: ids are taken when a row is inserted, so two messages of one conversation
  that reach two processes within about a millisecond are ordered by whose insert ran first,
  and a row whose insert has not committed when the other process checks is not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from bot.inbox import (
    DONE_KEPT_S,
    FORGET_EVERY,
    UNFINISHED_KEPT_S,
    InboxError,
    State,
    Unfinished,
    key_columns,
    row_values,
)
from bot.inbox import unfinished_row as _row
from bot.pg_migrate import (
    CONNECTION_OPTIONS,
    LOCK_CLASS,
    MigrationError,
    connect,
    connection_problem,
    migrate,
)
from bot.types import ConversationKey, Incoming

log = logging.getLogger(__name__)

LIVE_CLASS = LOCK_CLASS + 1  # advisory lock (LIVE_CLASS, instance id): held while the process is alive
HEARTBEAT_S = 2.0
DEAD_AFTER_S = 15.0
TURN_POLL_S = 0.05
RECONNECT_AFTER_S = 5.0
CLAIM_LOCK = 2  # advisory lock (LOCK_CLASS, CLAIM_LOCK): one claimer at a time
# A reconnect blocks the event loop: short, where the async connections may take CONNECT_TIMEOUT_S.
SYNC_CONNECT_TIMEOUT_S = 2
INSTANCES_KEPT_S = 24 * 3600.0


def _holds_lock(alias: str) -> str:
    """SQL: the owner of row ``alias`` holds its liveness lock in this database (its session is open)."""
    return (
        "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        f" AND l.classid = %(live)s::oid AND l.objid = {alias}.owner::oid AND l.objsubid = 2)"
    )


def _alive(alias: str) -> str:
    """SQL: the owner of row ``alias`` holds its liveness lock and beat recently (it is not hung either)."""
    return (
        f"({_holds_lock(alias)} AND EXISTS (SELECT 1 FROM instances o WHERE o.id = {alias}.owner"
        " AND o.seen_at > now() - %(dead_after)s * interval '1 second'))"
    )


_INSERT = (
    "INSERT INTO inbox (platform, channel, thread, message_id, reply_to, author, author_name, roles, text, command,"
    " state, owner, received_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING RETURNING id"
)
_CLAIM = (
    "UPDATE inbox AS i SET owner = %(me)s WHERE i.id IN (SELECT c.id FROM inbox c WHERE c.platform = %(platform)s"
    f" AND c.state <> 'done' AND c.owner IS DISTINCT FROM %(me)s AND NOT {_holds_lock('c')}"
    " FOR UPDATE OF c SKIP LOCKED)"
    " RETURNING i.id, i.channel, i.thread, i.message_id, i.reply_to, i.author, i.author_name, i.roles, i.text,"
    " i.command, i.received_at"
)
_EARLIER = (
    "SELECT EXISTS (SELECT 1 FROM inbox i WHERE i.platform = %(platform)s AND i.channel = %(channel)s"
    " AND i.thread = %(thread)s AND i.id < %(row)s AND i.state <> 'done' AND i.owner IS DISTINCT FROM %(me)s"
    f" AND {_alive('i')})"
)


class PostgresInbox:
    """Accepted messages in PostgreSQL, shared by every bot process of one deployment; open with ``open``."""

    def __init__(
        self,
        url: str,
        connections: tuple[psycopg.Connection[TupleRow], psycopg.AsyncConnection[TupleRow]],
        instance: int,
        clock: Callable[[], float] = time.time,
        timing: tuple[float, float] = (HEARTBEAT_S, DEAD_AFTER_S),
    ) -> None:
        """Use open connections (synchronous, async holding the liveness lock) of a registered instance."""
        self._url = url
        self._db, self._live = connections
        self.instance = instance
        self._clock = clock
        self._heartbeat_s, self._dead_after_s = timing
        self._accepted = 0
        self._heartbeat: asyncio.Task[None] | None = None
        self._next_connect = 0.0  # time.monotonic() before which no reconnect is tried
        self._locked = True  # holds its liveness lock (open takes it; a reconnect must take it again)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        heartbeat_s: float = HEARTBEAT_S,
        dead_after_s: float = DEAD_AFTER_S,
    ) -> PostgresInbox:
        """Connect, migrate, register this process and start its heartbeat; ``InboxError`` says why not."""
        try:
            live = await connect(url)
        except (psycopg.Error, ValueError) as error:
            raise InboxError(connection_problem(url, error)) from None
        try:
            await migrate(live)
            cursor = await live.execute("INSERT INTO instances DEFAULT VALUES RETURNING id")
            found = await cursor.fetchone()
            instance = int(found[0]) if found else 0
            await live.execute("SELECT pg_advisory_lock(%s, %s)", (LIVE_CLASS, instance))
            db = await asyncio.to_thread(_connect, url)
        except (psycopg.Error, ValueError, MigrationError) as error:
            await live.close()
            problem = str(error) if isinstance(error, MigrationError) else connection_problem(url, error)
            raise InboxError(problem) from None
        inbox = cls(url, (db, live), instance, clock, (heartbeat_s, dead_after_s))
        inbox._heartbeat = asyncio.create_task(inbox._beat(), name=f"inbox heartbeat {instance}")
        inbox.forget_done()
        return inbox

    def accept(self, message: Incoming, *, reply_to: str | None = None, answer: bool = True) -> int | None:
        """Record ``message``; its row id, or ``None`` if any process recorded this platform message before."""
        now = self._clock()
        self._accepted += 1
        if self._accepted % FORGET_EVERY == 0:
            self.forget_done()
        state = State.WAITING if answer else State.DONE
        row = (*row_values(message, reply_to, answer=answer), state.value, self.instance, now, now)
        found = self._one("record a message in the inbox", _INSERT, row)
        return None if found is None else int(found[0])

    def done(self, row: int) -> None:
        """The message is answered, or its author told why not; its text is forgotten."""
        self._one(
            f"mark message {row} answered in the inbox",
            "UPDATE inbox SET state = %s, text = '', updated_at = %s WHERE id = %s",
            (State.DONE.value, self._clock(), row),
        )

    def unfinished(self, platform: str) -> list[Unfinished]:
        """Claim the platform's unfinished messages whose owner is no longer alive; oldest first."""
        parameters = {"me": self.instance, "platform": platform} | self._liveness()
        try:
            connection = self._connection()
            with connection.transaction():
                # Claimers take turns: the next one's UPDATE then sees the rows the first took, whose owner is
                # alive (row locks alone let two claimers take a row one of them had just committed).
                connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, CLAIM_LOCK))
                rows = connection.execute(_CLAIM, parameters).fetchall()
        except psycopg.Error as error:
            raise InboxError(connection_problem(self._url, error)) from None
        return [_row(platform, *row) for row in sorted(rows)]

    def forget_done(self) -> int:
        """Delete finished rows older than a day, unfinished ones older than a week, and long-gone instances."""
        now = self._clock()
        try:
            connection = self._connection()
            cursor = connection.execute(
                "DELETE FROM inbox WHERE (state = 'done' AND updated_at < %s) OR (state <> 'done' AND updated_at < %s)",
                (now - DONE_KEPT_S, now - UNFINISHED_KEPT_S),
            )
            connection.execute(
                "DELETE FROM instances WHERE seen_at < now() - %s * interval '1 second'", (INSTANCES_KEPT_S,)
            )
        except psycopg.Error as error:
            raise InboxError(connection_problem(self._url, error)) from None
        return cursor.rowcount

    async def turn(self, key: ConversationKey, row: int | None) -> None:
        """Return once every earlier message of ``key`` recorded by another live process is done.

        A message not recorded (``row=None``) has no place among the rows and waits for none: waiting for rows
        recorded later could wait on a message that itself waits for this one.  Each check is one query on the
        async connection; between checks the loop runs freely.
        """
        if row is None:
            return
        platform, channel, thread = key_columns(key)
        parameters = {"platform": platform, "channel": channel, "thread": thread, "me": self.instance, "row": row}
        parameters |= self._liveness()
        # Polled (see the module's docstring): nothing in this process could set an event for another's row.
        while True:
            if not await self._scalar(_EARLIER, parameters):
                return
            await asyncio.sleep(TURN_POLL_S)

    async def aclose(self) -> None:
        """Stop the heartbeat, leave the instances (this process's unfinished rows become claimable), disconnect."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        with contextlib.suppress(psycopg.Error):
            await self._live.execute("DELETE FROM instances WHERE id = %s", (self.instance,))
        await self._live.close()
        self._db.close()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                if self._live.closed:  # the server restarted or the network failed: lock and beat again
                    self._locked = False
                    self._live = await connect(self._url)
                if not self._locked:
                    # Never waits; tried every beat until held: an old session of ours still holding it (half-open)
                    # is dropped by the server's keepalives meanwhile.
                    self._locked = await self._try_lock()
                await self._live.execute("UPDATE instances SET seen_at = now() WHERE id = %s", (self.instance,))
            except (psycopg.Error, OSError) as error:
                log.warning("Inbox heartbeat failed, retrying: %s", connection_problem(self._url, error))

    async def _try_lock(self) -> bool:
        cursor = await self._live.execute("SELECT pg_try_advisory_lock(%s, %s)", (LIVE_CLASS, self.instance))
        row = await cursor.fetchone()
        locked = bool(row and row[0])
        if not locked:
            log.warning("Inbox: this process's liveness lock is still held by its old session; trying again")
        return locked

    async def _scalar(self, query: str, parameters: dict[str, object]) -> Any:
        try:
            cursor = await self._live.execute(query, parameters)
            found = await cursor.fetchone()
        except psycopg.Error as error:
            raise InboxError(connection_problem(self._url, error)) from None
        return None if found is None else found[0]

    def _one(self, what: str, query: str, parameters: tuple[object, ...]) -> TupleRow | None:
        try:
            cursor = self._connection().execute(query, parameters)
            return cursor.fetchone() if cursor.description else None
        except psycopg.Error as error:
            raise InboxError(f"Cannot {what}: {connection_problem(self._url, error)}") from None

    def _connection(self) -> psycopg.Connection[TupleRow]:
        """The synchronous connection, made again if it broke (a server restart): the next call works again.

        It runs on the event loop, so after a failed attempt the next one waits ``RECONNECT_AFTER_S``: meanwhile
        calls fail at once (the message is answered, only not recorded) instead of stalling every platform.
        """
        if self._db.closed:
            if time.monotonic() < self._next_connect:
                raise psycopg.OperationalError("the database was unreachable moments ago; trying again soon")
            self._next_connect = time.monotonic() + RECONNECT_AFTER_S
            self._db = _connect(self._url)
        return self._db

    def _liveness(self) -> dict[str, object]:
        return {"live": LIVE_CLASS, "dead_after": self._dead_after_s}


def _connect(url: str) -> psycopg.Connection[TupleRow]:
    return psycopg.connect(url, autocommit=True, connect_timeout=SYNC_CONNECT_TIMEOUT_S, **CONNECTION_OPTIONS)
