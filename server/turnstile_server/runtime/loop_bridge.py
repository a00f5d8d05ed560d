"""Calls between the server's event loop and a graph loop (an event loop in its own thread).

Only plain values cross: a coroutine or callback is always created and run on the loop it
belongs to, and each side learns the other's outcome through a future of its own loop, set
by `call_soon_threadsafe`. No asyncio object (future, task, event) of one loop is awaited,
set or cancelled from the other.

Everything the graph side hands the server side (its events, its store calls, its outcome)
goes through one queue, in order: the server side runs it in turns of at most `TURN_SECONDS`,
so a graph that emits 50,000 events without awaiting cannot hold the server's loop for more
than one turn at a time, and a run's `end` never overtakes one of its events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

TURN_SECONDS = 0.0005
"""How long the server loop runs queued graph-side work before it lets its other tasks in."""


class LoopBridge:
    """The server loop's side of one or more graph loops: an ordered queue of work for it."""

    def __init__(self, server: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self._queue: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, work: Callable[[], None]) -> None:
        """From any thread: run `work` on the server loop, after everything posted before it."""
        with self._lock:
            self._queue.append(work)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.server.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the server loop is closed: nothing will run
            with self._lock:
                self._queue.clear()
                self._scheduled = False

    def _drain(self) -> None:
        """On the server loop: one turn of queued work; schedules the next turn if any is left."""
        ends = time.perf_counter() + TURN_SECONDS
        while True:
            with self._lock:
                if not self._queue:
                    self._scheduled = False
                    return
                work = self._queue.popleft()
            try:
                work()
            except Exception:  # one item's fault must not stop the queue
                log.exception("graph-side work failed on the server loop")
            if time.perf_counter() >= ends:
                break
        self.server.call_soon(self._drain)

    async def call(self, start: Callable[[], Awaitable[T]]) -> T:
        """From a graph loop: await `start()` run on the server loop (in order after what was
        posted before) and return its outcome.

        Cancelling the caller does not cancel the server-side call: the caller waits for it to
        end, then is cancelled (what the server side does, such as landing a write, is done).
        """
        graph = asyncio.get_running_loop()
        done: asyncio.Future[T] = graph.create_future()

        def begin() -> None:
            task = asyncio.ensure_future(start())
            task.add_done_callback(
                lambda ended: graph.call_soon_threadsafe(_Outcome.of(ended).settle, done)
            )

        self.post(begin)
        return await _outcome(done, on_cancel=None)

    async def run_on(
        self, graph: asyncio.AbstractEventLoop, start: Callable[[], Awaitable[T]]
    ) -> T:
        """From the server loop: await `start()` run as a task on the `graph` loop and end as it
        ends (its result, its exception or its cancellation).

        Cancelling the caller cancels that task (each time) and waits for it to end: the call
        returns only once the graph-side task has unwound, however long it takes to reach an
        await. Its outcome arrives through the queue, after every event it posted.
        """
        done: asyncio.Future[T] = self.server.create_future()
        handle: list[asyncio.Future[T]] = []

        def ended(task: asyncio.Future[T]) -> None:  # on the graph loop
            outcome = _Outcome.of(task)
            self.post(lambda: outcome.settle(done))

        def begin() -> None:
            task = asyncio.ensure_future(start())
            handle.append(task)
            task.add_done_callback(ended)

        def cancel() -> None:  # on the graph loop, after `begin` (its queue is in order too)
            handle[0].cancel()

        graph.call_soon_threadsafe(begin)
        return await _outcome(done, on_cancel=lambda: graph.call_soon_threadsafe(cancel))


async def _outcome(done: asyncio.Future[T], *, on_cancel: Callable[[], Any] | None) -> T:
    """Waits for `done`, which the other side sets, even if cancelled meanwhile; then ends as
    it did, or cancelled if the waiter was cancelled and `done` has a result or an error."""
    cancelled = False
    while not done.done():
        try:
            await asyncio.wait([done])
        except asyncio.CancelledError:
            if on_cancel is None:
                cancelled = True
            else:
                on_cancel()
    if cancelled:
        if not done.cancelled():
            done.exception()  # retrieved: the caller is cancelled whatever it was
        raise asyncio.CancelledError
    return done.result()


class _Outcome:
    """How a future of one loop ended, as plain values another loop's future can take."""

    __slots__ = ("cancelled", "error", "value")

    def __init__(self, cancelled: bool, error: BaseException | None, value: Any) -> None:
        self.cancelled = cancelled
        self.error = error
        self.value = value

    @classmethod
    def of(cls, ended: asyncio.Future[Any]) -> _Outcome:
        """Read on the loop of `ended`, which is done."""
        if ended.cancelled():
            return cls(True, None, None)
        error = ended.exception()
        return cls(False, error, None if error is not None else ended.result())

    def settle(self, done: asyncio.Future[Any]) -> None:
        """On the loop of `done`: ends it the same way."""
        if done.done():
            return
        if self.cancelled:
            done.cancel()
        elif self.error is not None:
            done.set_exception(self.error)
        else:
            done.set_result(self.value)
