"""A SQLite connection with a thread of its own, where whole store operations run.

aiosqlite gives each connection a thread too, but its public API hands one statement at a
time to that thread and back to the event loop. The store's group commit needs to run many
operations, with Python between their statements, in one go in the thread without waiting for
the loop (see `database.py`); aiosqlite's API has no call for that (it has it only as the
private `_execute`). Driven statement by statement through the public API, the same group
commit ran at a fraction of the rate (docs/storage.md gives the measure), so the store keeps
the thread itself: this module is that thread, a queue, and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from turnstile_server.store.sqlite.retry import RetryPolicy
from turnstile_server.store.sqlite.session import Session

log = logging.getLogger(__name__)

T = TypeVar("T")
_Job = Callable[[], None] | None  # None stops the thread


class Connection:
    """A sqlite3 connection used only in its own thread: bodies run there one by one, in the
    order they were queued, each with a `Session` over the connection."""

    def __init__(self, path: str, policy: RetryPolicy) -> None:
        self.path = path
        self.policy = policy
        # Read by each body in the thread when it starts: tests slip a stand-in under it.
        self.sqlite: sqlite3.Connection | None = None
        self._jobs: SimpleQueue[_Job] = SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"sqlite {path}", daemon=True)
        self._closed = False

    @classmethod
    async def open(cls, path: str, policy: RetryPolicy) -> Connection:
        """Starts the thread and connects (autocommit mode: the store says BEGIN itself)."""
        conn = cls(path, policy)
        conn._thread.start()
        try:
            await conn._call(conn._connect)
        except BaseException:
            conn._jobs.put(None)
            raise
        return conn

    def _connect(self) -> None:
        self.sqlite = sqlite3.connect(self.path, isolation_level=None)
        self.sqlite.row_factory = sqlite3.Row

    async def run(self, body: Callable[[Session], T]) -> T:
        """Runs `body` in the connection's thread and returns what it returned."""
        return await self._call(lambda: body(self.session()))

    def submit(self, body: Callable[[Session], None]) -> None:
        """Queues `body` to run in the connection's thread; nobody waits for it. It must not
        raise: what it hands back, it hands back itself."""
        if self._closed:
            raise sqlite3.ProgrammingError("the connection is closed")
        self._jobs.put(lambda: body(self.session()))

    async def close(self) -> None:
        """Closes the connection once the bodies queued before have run; stops the thread."""
        if self._closed:
            return
        try:
            await self._call(self._disconnect)
        finally:
            self._closed = True
            self._jobs.put(None)

    def _disconnect(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
            self.sqlite = None

    def session(self) -> Session:
        """A session over the connection, for use in its thread only."""
        if self.sqlite is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return Session(self.sqlite, self.policy)

    async def _call(self, function: Callable[[], T]) -> T:
        if self._closed:
            raise sqlite3.ProgrammingError("the connection is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = function()
            except BaseException as exc:
                _hand(loop, _failed, future, exc)
            else:
                _hand(loop, _succeeded, future, result)

        self._jobs.put(job)
        return await future

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()


def _hand(loop: asyncio.AbstractEventLoop, answer: Callable[..., None], *args: Any) -> None:
    """Hands an outcome back to the loop, unless the loop has closed (nobody waits then)."""
    try:
        loop.call_soon_threadsafe(answer, *args)
    except RuntimeError:
        log.debug("a SQLite call ended after its event loop closed")


def _succeeded(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():  # its caller was cancelled meanwhile
        future.set_result(result)


def _failed(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
