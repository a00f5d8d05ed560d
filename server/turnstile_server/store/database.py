"""The SQLite connections: one writer behind a lock, one reader; WAL; migrations on open.

Transient errors (SQLITE_BUSY, SQLITE_LOCKED) are retried with bounded, jittered backoff
wherever a retry cannot apply anything twice (see `store/retry.py`): a read; `BEGIN IMMEDIATE`,
before the transaction's body has run; a statement inside a transaction that SQLite kept open
(it undid just that statement); `COMMIT` while the transaction is still open. What outlasts the
retries, and the I/O-type errors that are never retried, surface as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from aiosqlite.context import Result

from turnstile_server.store.retry import RetryPolicy, is_transient, retried, store_errors
from turnstile_server.store.schema import MIGRATIONS

log = logging.getLogger(__name__)

Row = sqlite3.Row
T = TypeVar("T")


class Database:
    """A SQLite file opened for the server: writes serialised in `BEGIN IMMEDIATE` transactions."""

    def __init__(
        self,
        path: str,
        writer: Connection,
        reader: Connection,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.path = path
        self._policy = policy or RetryPolicy()
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, policy: RetryPolicy | None = None) -> Database:
        """Opens (creating if needed) and migrates the database at `path`."""
        path = str(path)
        policy = policy or RetryPolicy()
        writer = await _connect(path, policy)
        try:
            await _migrate(writer)
            reader = await _connect(path, policy)
        except BaseException:
            await writer.close()
            raise
        log.info("database %s at schema version %d", path, len(MIGRATIONS))
        return cls(path, writer, reader, policy)

    async def close(self) -> None:
        """Closes both connections after their queued work."""
        async with self._write_lock:
            await self._writer.close()
        await self._reader.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Runs the block in one `BEGIN IMMEDIATE` transaction on the writer, committing on exit.

        The block runs once; its statements are retried one by one while SQLite keeps the
        transaction open. Raises StoreUnavailable when the store cannot apply it now.
        """
        async with self._write_lock:
            with store_errors():
                await self._begin()
                try:
                    yield self._writer
                except BaseException:
                    await to_the_end(self._rollback(), "rolling back a cancelled transaction")
                    raise
                await to_the_end(self._commit(), "committing a cancelled transaction")

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """Reads committed rows through the reader connection."""
        args = tuple(params)
        with store_errors():
            rows = await retried(
                self._policy, lambda: self._reader.execute_fetchall(sql, args), is_transient
            )
        return list(rows)

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """Reads the first committed row, or None."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def _begin(self) -> None:
        if self._writer.in_transaction:
            # An earlier rollback failed: never build on what that transaction left.
            log.warning("the writer was still in a transaction; rolling it back")
            await self._writer.rollback()
        await self._writer.execute("BEGIN IMMEDIATE")

    async def _commit(self) -> None:
        # A COMMIT that failed busy leaves the transaction open, and retrying it is safe.
        try:
            await retried(
                self._policy,
                self._writer.commit,
                lambda exc: is_transient(exc) and self._writer.in_transaction,
            )
        except BaseException:
            await self._rollback()
            raise

    async def _rollback(self) -> None:
        try:
            await self._writer.rollback()
        except sqlite3.Error:
            log.warning("rollback failed; the next transaction rolls back first", exc_info=True)


class Connection(aiosqlite.Connection):
    """An aiosqlite connection whose `execute` retries transient errors when that is safe.

    Safe means the transaction state is what it was before the attempt: outside a transaction
    the failed statement changed nothing; inside one, SQLite undid just that statement. If
    SQLite abandoned the transaction instead, the error propagates and the block ends.
    """

    def __init__(self, path: str, policy: RetryPolicy) -> None:
        super().__init__(lambda: sqlite3.connect(path, isolation_level=None), 64)
        self._policy = policy

    def execute(
        self, sql: str, parameters: Iterable[Any] | None = None
    ) -> Result[aiosqlite.Cursor]:
        """Executes one statement, retried as the class says; awaitable or `async with`."""
        return Result(self._execute_retried(sql, parameters))

    async def _execute_retried(
        self, sql: str, parameters: Iterable[Any] | None
    ) -> aiosqlite.Cursor:
        was_in_transaction = self.in_transaction
        once = super().execute

        def safe(exc: BaseException) -> bool:
            return is_transient(exc) and self.in_transaction == was_in_transaction

        return await retried(self._policy, lambda: once(sql, parameters), safe)


async def _connect(path: str, policy: RetryPolicy) -> Connection:
    conn = Connection(path, policy)
    await conn
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute(f"PRAGMA busy_timeout={int(policy.busy_timeout_ms)}")
    return conn


async def to_the_end(work: Awaitable[T], what: str) -> T:
    """Awaits `work` even if the caller is cancelled meanwhile, then lets the cancellation on.

    For writes a cancellation must not cut in half: a commit or rollback must finish before the
    write lock is released (the next transaction would begin on a connection still in this
    one), and a cancelled run's checkpoint must land before the run is finished or rolled back.
    A failure of `work` after the cancellation is logged as `what` failing.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed", what, exc_info=task.exception())
        raise


async def _migrate(conn: aiosqlite.Connection) -> None:
    row = await (await conn.execute("PRAGMA user_version")).fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this server ({len(MIGRATIONS)})"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()
        log.info("applied schema migration %d", number)


def _statements(script: str) -> list[str]:
    """Splits a migration script into statements (no semicolons inside our DDL literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
