"""The SQLite connections: one writer, one reader, each in its aiosqlite thread; WAL.

A store operation is a plain function over a `Session`, run whole in the connection's thread:
one hand-off to the thread per operation, however many statements it runs. Writes are grouped:
every write submitted while the previous group commits runs in the next group, each in its own
savepoint of one `BEGIN IMMEDIATE` transaction, and all of them are answered after its
`COMMIT`. So a write's caller hears back only once its write is committed, and many writes share
one hand-off and one commit (group commit).

Transient errors (SQLITE_BUSY, SQLITE_LOCKED) are retried with bounded, jittered backoff
wherever a retry cannot apply anything twice (see `store/retry.py`): a read; `BEGIN IMMEDIATE`;
a statement inside a transaction that SQLite kept open (it undid just that statement); `COMMIT`
while the transaction is still open. What outlasts the retries, and the I/O-type errors that are
never retried, surface as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from turnstile_server.store.retry import (
    RetryPolicy,
    error_name,
    is_transient,
    retried,
    store_errors,
)
from turnstile_server.store.schema import MIGRATIONS

log = logging.getLogger(__name__)

Row = sqlite3.Row
T = TypeVar("T")
Body = Callable[["Session"], T]
"""A store operation: runs in the connection's thread, statement by statement."""

_SAVEPOINT = "write"


class Session:
    """A connection seen from its own thread: statements retried where that is safe.

    Safe means the transaction state is what it was before the attempt: outside a transaction
    the failed statement changed nothing; inside one, SQLite undid just that statement. If
    SQLite abandoned the transaction instead, the error propagates.
    """

    __slots__ = ("_conn", "_policy")

    def __init__(self, conn: sqlite3.Connection, policy: RetryPolicy) -> None:
        self._conn = conn
        self._policy = policy

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""
        return self._conn.in_transaction

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Cursor:
        """Executes one statement, retried as the class says."""
        args = tuple(parameters)
        was_in_transaction = self._conn.in_transaction

        def safe(exc: BaseException) -> bool:
            return is_transient(exc) and self._conn.in_transaction == was_in_transaction

        return retried(self._policy, lambda: self._conn.execute(sql, args), safe)

    def one(self, sql: str, parameters: Iterable[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        row: Row | None = self.execute(sql, parameters).fetchone()
        return row

    def all(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        """Every row of a query."""
        return list(self.execute(sql, parameters).fetchall())

    def commit(self) -> None:
        """Commits; a COMMIT that failed busy leaves the transaction open, so it is retried."""
        retried(
            self._policy,
            self._conn.commit,
            lambda exc: is_transient(exc) and self._conn.in_transaction,
        )

    def rollback(self) -> None:
        """Rolls back, logging (not raising) a failure: the next transaction rolls back first."""
        try:
            self._conn.rollback()
        except sqlite3.Error:
            log.warning("rollback failed; the next transaction rolls back first", exc_info=True)


class Connection(aiosqlite.Connection):
    """An aiosqlite connection that runs whole store operations in its thread."""

    def __init__(self, path: str, policy: RetryPolicy) -> None:
        super().__init__(lambda: sqlite3.connect(path, isolation_level=None), 64)
        self.policy = policy

    async def run(self, body: Callable[[Session], T]) -> T:
        """Runs `body` in the connection's thread with a `Session` over the connection."""
        # `_conn` is read in the thread, at call time: tests slip a stand-in under it.
        execute: Callable[[Callable[[], T]], Awaitable[T]] = self._execute
        return await execute(lambda: body(Session(self._conn, self.policy)))


class Database:
    """A SQLite file opened for the server: reads on one connection, grouped writes on another."""

    def __init__(self, path: str, writer: Connection, reader: Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._queue: list[tuple[Body[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, *, policy: RetryPolicy | None = None) -> Database:
        """Opens (creating if needed) and migrates the database at `path`."""
        path = str(path)
        policy = policy or RetryPolicy()
        writer = await _connect(path, policy)
        try:
            await writer.run(_migrate)
            reader = await _connect(path, policy)
        except BaseException:
            await writer.close()
            raise
        log.info("database %s at schema version %d", path, len(MIGRATIONS))
        return cls(path, writer, reader)

    async def close(self) -> None:
        """Closes both connections once the writes submitted so far have been answered."""
        self._closed = True
        if self._flusher is not None:
            await asyncio.wait([self._flusher])
        await self._writer.close()
        await self._reader.close()

    async def write(self, body: Body[T]) -> T:
        """Runs `body` in a write transaction and returns what it returned, once committed.

        If `body` raises, what it wrote is undone and the exception is raised here; the writes
        grouped with it are unaffected. If the store fails (an I/O error, a lock that outlasts
        the retries), nothing of the group is applied and every write in it raises
        StoreUnavailable. Cancelling the caller withdraws a write that has not begun; one that
        has begun is applied all the same.
        """
        if self._closed:
            raise sqlite3.ProgrammingError("the database is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((body, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="store writes")
        return await future

    async def read(self, body: Body[T]) -> T:
        """Runs `body` on the reader connection (it sees committed writes only)."""
        with store_errors():
            return await self._reader.run(body)

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """Reads committed rows."""
        args = tuple(params)
        return await self.read(lambda s: s.all(sql, args))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """Reads the first committed row, or None."""
        args = tuple(params)
        return await self.read(lambda s: s.one(sql, args))

    async def _flush(self) -> None:
        """Commits the queued writes group by group until none is left."""
        try:
            while self._queue:
                group = [(body, f) for body, f in self._queue if not f.done()]
                self._queue.clear()
                if not group:
                    continue
                bodies = [body for body, _ in group]
                try:
                    with store_errors():
                        outcomes = await to_the_end(
                            self._writer.run(partial(_apply, bodies=bodies)),
                            "committing a group of writes",
                        )
                except Exception as exc:
                    outcomes = [(False, exc)] * len(group)
                for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flusher = None


def _apply(session: Session, bodies: list[Body[Any]]) -> list[tuple[bool, Any]]:
    """In the writer's thread: one transaction, a savepoint per body, one commit.

    Returns (True, result) or (False, exception) per body. Raises, applying nothing, when the
    transaction itself fails.
    """
    if session.in_transaction:
        # An earlier rollback failed: never build on what that transaction left.
        log.warning("the writer was still in a transaction; rolling it back")
        session.rollback()
    session.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[tuple[bool, Any]] = []
        for body in bodies:
            session.execute(f"SAVEPOINT {_SAVEPOINT}")
            try:
                outcomes.append((True, body(session)))
            except Exception as exc:
                if not session.in_transaction or error_name(exc) is not None:
                    raise  # the transaction is gone (or the store is): the group fails
                session.execute(f"ROLLBACK TO {_SAVEPOINT}")
                outcomes.append((False, exc))
            session.execute(f"RELEASE {_SAVEPOINT}")
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return outcomes


async def _connect(path: str, policy: RetryPolicy) -> Connection:
    conn = Connection(path, policy)
    await conn
    conn.row_factory = sqlite3.Row
    await conn.run(lambda s: _configure(s, policy))
    return conn


def _configure(session: Session, policy: RetryPolicy) -> None:
    session.execute("PRAGMA journal_mode=WAL")
    session.execute("PRAGMA synchronous=NORMAL")
    session.execute("PRAGMA foreign_keys=ON")
    session.execute(f"PRAGMA busy_timeout={int(policy.busy_timeout_ms)}")


async def to_the_end(work: Awaitable[T], what: str) -> T:
    """Awaits `work` even if the caller is cancelled meanwhile, then lets the cancellation on.

    For writes a cancellation must not cut in half: a group of writes must be answered once it
    has begun, and a cancelled run's checkpoint must land before the run is finished or rolled
    back. A failure of `work` after the cancellation is logged as `what` failing.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed", what, exc_info=task.exception())
        raise


def _migrate(session: Session) -> None:
    row = session.one("PRAGMA user_version")
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this server ({len(MIGRATIONS)})"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        session.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                session.execute(statement)
            session.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            session.rollback()
            raise
        session.commit()
        log.info("applied schema migration %d", number)


def _statements(script: str) -> list[str]:
    """Splits a migration script into statements (no semicolons inside our DDL literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
