"""A real PostgreSQL for the tests, started in a temporary directory on a free loopback port.

``start_postgres(directory)`` runs ``initdb`` and ``pg_ctl start`` of the PostgreSQL that
Debian packages (``apt-get install postgresql``; ``/usr/lib/postgresql/<version>/bin``):
trust authentication, TCP on 127.0.0.1 only, its unix socket inside ``directory``.
``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user,
which then owns ``directory``.  The pytest fixtures share one server per session (it takes
a few seconds to start) and give every test a fresh, empty database.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from bot.inbox import Inbox, SQLiteInbox
from bot.pg_inbox import PostgresInbox
from bot.pg_store import PostgresHistoryStore
from bot.storage import AdminHistoryStore
from bot.store import Retention, SQLiteHistoryStore
from entry.llama_server import free_port

_VERSIONS = ("17", "16", "15", "14", "13")
# Not durable: a test server loses nothing worth keeping when the machine crashes, and syncing costs seconds.
_SERVER_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    " -c max_connections=200 -c shared_buffers=16MB"
)


def postgres_bin() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or ``None`` where PostgreSQL is not installed."""
    override = os.environ.get("TEST_POSTGRES_BIN")
    candidates = [Path(override)] if override else [Path(f"/usr/lib/postgresql/{v}/bin") for v in _VERSIONS]
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@dataclass
class PostgresServer:
    """A running test server; ``stop()`` ends it and deletes its files."""

    directory: Path
    port: int
    bin_dir: Path
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database`` on this server (superuser ``postgres``, no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (``test_N`` unless named) and return its URL."""
        name = name or f"test_{next(self._numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once (nothing in it is kept) and delete its directory."""
        _run(self.bin_dir / "pg_ctl", "stop", "-m", "immediate", "-D", str(self.directory / "data"), cwd=self.directory)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(directory: Path | None = None) -> PostgresServer:
    """Initialise and start a server in ``directory`` (a new temporary one if not given).

    ``directory`` must be reachable by the ``postgres`` user when running as root (pytest's
    ``tmp_path`` is not: its parent is private to root), so the default is a fresh directory in /tmp.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql): initdb not found")
    directory = directory or Path(tempfile.mkdtemp(prefix="bot-postgres-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(directory, account.pw_uid, account.pw_gid)
    try:
        return _start(directory, bin_dir)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _start(directory: Path, bin_dir: Path) -> PostgresServer:
    data = directory / "data"
    _run(
        bin_dir / "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale",
        "--no-sync", cwd=directory,
    )  # fmt: skip
    port = free_port()
    options = f"-p {port} -k {directory} {_SERVER_OPTIONS}"
    _run(
        bin_dir / "pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(directory / "server.log"),
        "-o", options, cwd=directory,
    )  # fmt: skip
    return PostgresServer(directory, port, bin_dir)


def _run(program: Path, *arguments: str, cwd: Path) -> None:
    command = [str(program), *arguments]
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        command = ["runuser", "-u", "postgres", "--", *command]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        log = cwd / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}{result.stdout}{tail}")


_SERVER = pytest.StashKey[PostgresServer]()


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """One PostgreSQL for the whole session; skipped (with the reason) where it is not installed, failed in CI.

    Kept in the session's stash, so modules that import this fixture still share one server.
    """
    if postgres_bin() is None:
        missing = "PostgreSQL is not installed (apt-get install postgresql): initdb not found"
        if os.environ.get("CI"):  # .ci/run installs it: a CI without it must not pass green on skips
            pytest.fail(missing)
        pytest.skip(missing)
    stash = request.config.stash
    if _SERVER not in stash:
        stash[_SERVER] = start_postgres()
        request.config.add_cleanup(stash[_SERVER].stop)
    return stash[_SERVER]


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database for this test: ``postgresql://postgres@127.0.0.1:PORT/test_N``."""
    return postgres_server.create_database()


StoreOpener = Callable[..., Awaitable[AdminHistoryStore]]
InboxOpener = Callable[..., Awaitable[Inbox]]


@pytest.fixture(params=["sqlite", "postgresql"])
def open_history(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """``await open_history(retention=, clock=, prune=)``: the history store under test, the same database each call."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None

    async def open_store(
        *, retention: Retention | None = None, clock: Callable[[], float] = time.time, prune: bool = True
    ) -> AdminHistoryStore:
        if url is None:
            path = tmp_path / "history.sqlite3"
            return await SQLiteHistoryStore.open(path, retention=retention, clock=clock, prune=prune)
        return await PostgresHistoryStore.open(url, retention=retention, clock=clock, prune=prune)

    return open_store


@pytest.fixture(params=["sqlite", "postgresql"])
async def open_inbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[InboxOpener]:
    """``await open_inbox(clock=)``: an inbox on the same database each call, as a restarted process opens it.

    Each is closed at the end of the test (``aclose`` twice is harmless).
    """
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    opened: list[Inbox] = []

    async def open_one(*, clock: Callable[[], float] = time.time) -> Inbox:
        inbox: Inbox
        if url is None:
            inbox = SQLiteInbox.open(tmp_path / "history.sqlite3", clock=clock)
        else:
            inbox = await PostgresInbox.open(url, clock=clock)
        opened.append(inbox)
        return inbox

    yield open_one
    for inbox in opened:
        await inbox.aclose()
