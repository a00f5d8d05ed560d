"""The SQLite connections: one writer, one reader, each in a thread of its own; WAL.

A store operation is a plain function over a `Session`, run whole in the connection's thread:
one hand-off to the thread per operation, however many statements it runs. Writes are grouped:
every write submitted while the previous group commits runs in the next group, one after the
other in one `BEGIN IMMEDIATE` transaction, and all of them are answered after its `COMMIT`.
So a write's caller hears back only once its write is committed, and many writes share one
commit (group commit). The writer's thread takes group after group by itself while writes
keep coming; when it is idle, the loop wakes it once it has run the callbacks ready at the first
write, so that the writes they queue share that group. A write that fails is undone alone (see
`_apply`).

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
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from turnstile_server.store.sqlite.connection import Connection
from turnstile_server.store.sqlite.lock import ProcessLock
from turnstile_server.store.sqlite.retry import RetryPolicy, error_name, store_errors
from turnstile_server.store.sqlite.schema import MIGRATIONS
from turnstile_server.store.sqlite.session import Row, Session

__all__ = ["Body", "Database", "Row", "Session", "landed"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Body = Callable[["Session"], T]
"""A store operation: runs in the connection's thread, statement by statement."""


_Write = tuple[Body[Any], asyncio.Future[Any]]
"""A queued write: its body, and the future its caller awaits."""


class Database:
    """A SQLite file opened for the server: reads on one connection, grouped writes on another.

    The writer's thread commits group after group while writes keep coming, without waiting
    for the event loop between them: the loop only queues writes and hears the outcomes.
    """

    def __init__(
        self, path: str, writer: Connection, reader: Connection, lock: ProcessLock | None = None
    ) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._process_lock = lock
        self._lock = threading.Lock()
        self._queue: list[_Write] = []  # under the lock
        self._committing = False  # under the lock: the writer's thread is taking groups
        self._flush_pending = False  # in the loop: `_flush` is scheduled
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path, *, policy: RetryPolicy | None = None) -> Database:
        """Opens (creating if needed) and migrates the database at `path`; DatabaseInUse if
        another store, in this process or another, has it open (one server process per file)."""
        path = str(path)
        policy = policy or RetryPolicy()
        lock = ProcessLock.acquire(path)
        try:
            writer = await _connect(path, policy)
            try:
                await writer.run(_migrate)
                reader = await _connect(path, policy)
            except BaseException:
                await writer.close()
                raise
        except BaseException:
            lock.release()
            raise
        log.info("database %s at schema version %d", path, len(MIGRATIONS))
        return cls(path, writer, reader, lock)

    @property
    def connections(self) -> tuple[Connection, Connection]:
        """The writer and the reader (for tests that slip faults under them)."""
        return self._writer, self._reader

    async def close(self) -> None:
        """Closes both connections once the writes submitted so far have been answered."""
        self._closed = True
        self._flush()
        # The writer's thread takes its work in order: once this runs there, every group
        # queued before has been committed and its answers are on their way to the loop.
        await self._writer.run(lambda session: None)
        await asyncio.sleep(0)
        try:
            await self._writer.close()
            await self._reader.close()
        finally:
            if self._process_lock is not None:
                self._process_lock.release()

    async def write(self, body: Body[T]) -> T:
        """Runs `body` in a write transaction and returns what it returned, once committed.

        If `body` raises, what it wrote is undone and the exception is raised here; the writes
        grouped with it are unaffected. If the store fails (an I/O error, a lock that outlasts
        the retries), nothing of the group is applied and every write in it raises
        StoreUnavailable. Cancelling the caller withdraws a write that has not begun; one that
        has begun is applied all the same.
        """
        # A caller cancelled while awaiting cancels the future too: the writer's thread leaves
        # out a write whose future is cancelled when it takes the next group.
        return await self._queue_write(body)

    def submit(self, body: Body[T]) -> asyncio.Future[T]:
        """Queues `body` as `write` does, but for good: it is never withdrawn, and the future
        it returns (await it with `landed`) has its outcome once the group is committed."""
        return self._queue_write(body)

    def _queue_write(self, body: Body[T]) -> asyncio.Future[T]:
        if self._closed:
            raise sqlite3.ProgrammingError("the database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queue.append((body, future))
            idle = not self._committing
        if idle and not self._flush_pending:
            # The writer's thread is woken once the loop has run what is ready now, so the
            # writes queued meanwhile (other callers' admissions, steps and ends) go in the
            # same group: woken at the first write, it took the GIL at the loop's next release
            # (gRPC releases it often) and committed groups of one or two.
            self._flush_pending = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """Hands the queued writes to the writer's thread unless it is taking groups."""
        self._flush_pending = False
        with self._lock:
            if self._committing or not self._queue:
                return
            self._committing = True
        self._writer.submit(self._commit_groups)

    def _commit_groups(self, _: Session) -> None:
        """In the writer's thread: commits the queued writes group by group until none is left,
        handing each group's outcomes to the loop as soon as it is committed."""
        while True:
            with self._lock:
                # Withdrawn: the caller was cancelled before its write began. (A future's state
                # is read here outside its loop: it only ever goes from pending to done.)
                group = [(body, f) for body, f in self._queue if not f.cancelled()]
                self._queue.clear()
                if not group:
                    self._committing = False
                    return
            try:
                with store_errors():
                    # A session per group: what runs it is read afresh (tests swap it).
                    outcomes = _apply(self._writer.session(), [body for body, _ in group])
            except Exception as exc:
                outcomes = [(False, exc)] * len(group)
            loop = group[0][1].get_loop()
            try:
                loop.call_soon_threadsafe(_answer, group, outcomes)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.warning("a group of writes was committed after the event loop closed")

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


def _answer(group: list[_Write], outcomes: list[tuple[bool, Any]]) -> None:
    """In the loop: hands each write of a committed (or failed) group its outcome."""
    for (_, future), (ok, value) in zip(group, outcomes, strict=True):
        if future.done():  # its caller was cancelled meanwhile
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


async def landed(future: asyncio.Future[T]) -> T:
    """Awaits a submitted write; a caller cancelled meanwhile first waits for the write to be
    committed (or to fail), then is cancelled: no later write of the caller overtakes it."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled() and future.exception() is not None:
            log.warning("a write of a cancelled caller failed", exc_info=future.exception())
        raise


def _apply(session: Session, bodies: list[Body[Any]]) -> list[tuple[bool, Any]]:
    """In the writer's thread: the bodies in order in one transaction, then one commit.

    Returns (True, result) or (False, exception) per body. A body that raises having changed
    nothing just fails. One that raises after changing rows must be undone alone: the whole
    transaction is rolled back and the group applied again without it. (No savepoint per body:
    a savepoint makes SQLite copy every page a body touches, which cost more than the writes
    themselves, to undo what almost never needs undoing. Bodies are plain functions of the
    database, so applying one again gives what it would have given the first time.)

    Raises, applying nothing, when the transaction itself fails.
    """
    failed: dict[int, Exception] = {}
    while True:
        try:
            return _apply_once(session, bodies, failed)
        except _Undo as undo:
            failed[undo.index] = undo.error


class _Undo(Exception):
    """Body `index` raised `error` after changing rows: its group is applied again without it."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def _apply_once(
    session: Session, bodies: list[Body[Any]], failed: dict[int, Exception]
) -> list[tuple[bool, Any]]:
    if session.in_transaction:
        # An earlier rollback failed: never build on what that transaction left.
        log.warning("the writer was still in a transaction; rolling it back")
        session.rollback()
    session.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[tuple[bool, Any]] = []
        for index, body in enumerate(bodies):
            if index in failed:
                outcomes.append((False, failed[index]))
                continue
            changes = session.total_changes
            try:
                outcomes.append((True, body(session)))
            except Exception as exc:
                if not session.in_transaction or error_name(exc) is not None:
                    raise  # the transaction is gone (or the store is): the group fails
                if session.total_changes != changes:
                    raise _Undo(index, exc) from None
                outcomes.append((False, exc))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return outcomes


async def _connect(path: str, policy: RetryPolicy) -> Connection:
    conn = await Connection.open(path, policy)
    try:
        await conn.run(lambda s: _configure(s, policy))
    except BaseException:
        await conn.close()
        raise
    return conn


def _configure(session: Session, policy: RetryPolicy) -> None:
    session.execute("PRAGMA journal_mode=WAL")
    session.execute("PRAGMA synchronous=NORMAL")

    session.execute("PRAGMA foreign_keys=ON")
    session.execute(f"PRAGMA busy_timeout={int(policy.busy_timeout_ms)}")


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
