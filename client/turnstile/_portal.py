"""`Portal`: runs coroutines on a private event loop in a daemon thread, for the sync client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


class Portal:
    """A private event loop in a daemon thread, started on first use.

    `run` blocks the calling thread until a coroutine finished on that loop; an interrupt of
    the caller (e.g. Ctrl-C) cancels the coroutine.
    """

    def __init__(self, name: str = "turnstile-sync-client") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Runs `coro` on the portal's loop and returns its result or raises its error."""
        try:
            loop = self._started()
        except BaseException:
            coro.close()
            raise
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync Turnstile client cannot be called from its own loop")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self, last: Coroutine[Any, Any, None] | None = None) -> None:
        """Runs `last` (if given), then stops the loop and its thread; idempotent."""
        with self._lock:
            if self._closed:
                if last is not None:
                    last.close()
                return
            loop, thread = self._loop, self._thread
        try:
            if last is not None:
                if loop is None:
                    last.close()
                else:
                    self.run(last)
        finally:
            with self._lock:
                self._closed = True
            if loop is not None and thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()
                # Tasks still unwinding (a call cancelled by Ctrl-C a moment ago, the channel's
                # own) finish here, as `asyncio.run` lets them: a task destroyed pending is
                # reported on stderr.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise RuntimeError("the Turnstile client is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop


async def awaited(awaitable: Awaitable[_T]) -> _T:
    """Wraps an awaitable (such as `anext(...)`) in a coroutine, for `Portal.run`."""
    return await awaitable
