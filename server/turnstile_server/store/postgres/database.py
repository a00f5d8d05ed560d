"""The PostgreSQL connection pool: one transaction per store operation, retried where safe.

A store operation is an async function over one pooled connection, run whole inside one
transaction (`write`) or as plain reads (`read`). Writes are never withdrawn: once submitted a
write runs to its commit (or its failure) in a task of its own, even if its caller is cancelled
meanwhile, as the storage interface asks; `close` waits for them.

A transaction that lost a race (a deadlock, a serialization failure, or a unique key another
transaction took first) is rolled back by PostgreSQL and applied again from the start: the
bodies are functions of the database, so the retry sees the winner's rows and answers as if
it had come second. A connection that fails, or a statement that outlasts its deadline,
surfaces as StoreUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg

from turnstile_server.errors import InvalidArgument, StoreUnavailable
from turnstile_server.store.postgres.schema import migrate

log = logging.getLogger(__name__)

T = TypeVar("T")
Conn = Any
"""An `asyncpg.Connection` (asyncpg ships no type information)."""
Body = Callable[[Conn], Awaitable[T]]
"""A store operation: runs on one connection, inside one transaction for a write."""

POOL_SIZE = 10
"""Connections per store: writes in flight at once, beside reads."""
CONNECT_TIMEOUT = 10.0
"""Seconds to connect, or to wait for a free pooled connection."""
COMMAND_TIMEOUT = 30.0
"""Seconds a statement may take (a lock wait included) before the operation fails."""
RETRIES = 8
"""Attempts at a transaction that lost a race."""

_RACES: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.UniqueViolationError,
)
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.AdminShutdownError,
)


_UNSTORABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


class Database:
    """A pool of connections to one PostgreSQL database, migrated when opened."""

    def __init__(self, pool: Any, url: str) -> None:
        self._pool = pool
        self.url = url
        self._writes: set[asyncio.Task[Any]] = set()
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, pool_size: int = POOL_SIZE) -> Database:
        """Connects a pool to `url` and applies the migrations the database lacks;
        StoreUnavailable when the server cannot be reached."""
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
            )
        except (*_UNAVAILABLE, asyncpg.exceptions.PostgresError) as exc:
            raise StoreUnavailable(
                f"cannot open the PostgreSQL database {redacted(url)}: {exc}"
            ) from exc
        try:
            async with pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                before, after = await migrate(conn)
        except BaseException:
            await pool.close()
            raise
        log.info("database %s at schema version %d (was %d)", redacted(url), after, before)
        return cls(pool, url)

    async def close(self) -> None:
        """Waits for the writes submitted so far, then closes the pool."""
        self._closed = True
        if self._writes:
            await asyncio.wait(set(self._writes))
        try:
            await asyncio.wait_for(self._pool.close(), CONNECT_TIMEOUT)
        except TimeoutError:
            self._pool.terminate()

    async def write(self, body: Body[T]) -> T:
        """Runs `body` in one transaction and returns what it returned, once committed. If
        `body` raises, nothing it wrote is kept and the exception is raised here. A caller
        cancelled meanwhile is cancelled once the write has ended (see `landed`)."""
        return await landed(self.submit(body))

    def submit(self, body: Body[T]) -> asyncio.Future[T]:
        """Starts `body` as `write` does, for good, and returns it at once (await it with
        `landed`)."""
        if self._closed:
            raise StoreUnavailable("the database is closed")
        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(self._transaction(body))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    async def _transaction(self, body: Body[T]) -> T:
        for attempt in range(1, RETRIES + 1):
            try:
                with _unavailable():
                    pool = self._pool
                    async with pool.acquire(timeout=CONNECT_TIMEOUT) as conn, conn.transaction():
                        return await body(conn)
            except _RACES as exc:
                if attempt == RETRIES:
                    raise
                log.debug("transaction lost a race (%s); applying it again", type(exc).__name__)
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
        raise AssertionError("unreachable")

    async def read(self, body: Body[T]) -> T:
        """Runs `body` on a pooled connection, outside a transaction (reads only)."""
        with _unavailable():
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn:
                return await body(conn)

    async def snapshot(self, body: Body[T]) -> T:
        """Runs `body` in a read-only REPEATABLE READ transaction: its reads see one snapshot."""
        with _unavailable():
            async with (
                self._pool.acquire(timeout=CONNECT_TIMEOUT) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                return await body(conn)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows of one query."""
        return await self.read(lambda conn: conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        """The first row of one query, or None."""
        return await self.read(lambda conn: conn.fetchrow(sql, *args))


@contextmanager
def _unavailable() -> Iterator[None]:
    """Turns a failed connection or a statement past its deadline into StoreUnavailable, and
    text PostgreSQL cannot hold into InvalidArgument."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"the database failed: {type(exc).__name__}: {exc}") from exc
    except _UNSTORABLE as exc:
        # A string with NUL (an id, a request id, a name): PostgreSQL's text cannot hold it,
        # and no JSON value with \u0000 can be compared as jsonb (JSON kept as text is fine).
        raise InvalidArgument(
            "a text field contains the NUL character, which PostgreSQL cannot store",
            reason="INVALID_TEXT",
        ) from exc


async def landed(future: asyncio.Future[T]) -> T:
    """Awaits a submitted write; a caller cancelled meanwhile first waits for the write to end,
    then is cancelled: no later write of the caller overtakes it."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled() and future.exception() is not None:
            log.warning("a write of a cancelled caller failed", exc_info=future.exception())
        raise
