"""Calls between the server's event loop and a graph loop (an event loop in its own thread).

Only plain values cross: a coroutine or callback is always created and run on the loop it
belongs to, and each side learns the other's outcome on its own loop (`_Pending`), from work
the other side posted. No asyncio object (future, task, event) of one loop is
awaited, set or cancelled from the other.

Work crosses in lanes, one per loop, in order: a lane wakes its loop (`call_soon_threadsafe`,
a write to its self-pipe, a thread switch) once for all the work posted until it drains, not
once per item. Everything the graph side hands the server side (its events, its store calls,
its outcome) goes through the server's lane: the server side runs it in turns of at most
`TURN_SECONDS`, so a graph that emits 50,000 events without awaiting cannot hold the server's
loop for more than one turn at a time, and a run's `end` never overtakes one of its events.
What the server side sends a graph loop (a run to begin, its cancellation, the answers to its
calls) wakes that loop only once the server loop has run the callbacks ready now: under load,
the answers of many runs share one wake-up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")

log = logging.getLogger(__name__)

TURN_SECONDS = 0.0005
"""How long the server loop runs queued graph-side work before it lets its other tasks in."""


class _Lane:
    """Work for one loop from other threads, run there in order, in turns of at most
    `TURN_SECONDS`; the loop is woken once for all the work posted until it drains (one
    `call_soon_threadsafe`, not one per item)."""

    __slots__ = ("_lock", "_queue", "_scheduled", "_waking", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._queue: deque[Callable[[], None]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False  # under the lock: `_drain` is scheduled or running
        self._waking = False  # on the poster's loop: `_wake` is scheduled there

    def post(self, work: Callable[[], None]) -> None:
        """From any thread: run `work` on the lane's loop, after everything posted before it."""
        with self._lock:
            self._queue.append(work)
            if self._scheduled:
                return
            self._scheduled = True
        self._schedule()

    def post_later(self, poster: asyncio.AbstractEventLoop, work: Callable[[], None]) -> None:
        """From `poster`, the one loop that posts this way: `post`, but the lane's loop is woken
        only once `poster` has run the callbacks ready now, so that the work they post (other
        runs' answers) shares that one wake-up."""
        with self._lock:
            self._queue.append(work)
            if self._scheduled or self._waking:
                return
            self._waking = True
        poster.call_soon(self._wake)

    def _wake(self) -> None:
        with self._lock:
            self._waking = False
            if self._scheduled or not self._queue:
                return
            self._scheduled = True
        self._schedule()

    def _schedule(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing will run
            with self._lock:
                self._queue.clear()
                self._scheduled = False

    def _drain(self) -> None:
        """On the lane's loop: one turn of queued work; schedules the next turn if any is left."""
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
                log.exception("work posted from another loop failed")
            if time.perf_counter() >= ends:
                break
        self.loop.call_soon(self._drain)


class LoopBridge:
    """The server loop's side of one or more graph loops: an ordered lane of work for each."""

    def __init__(self, server: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self._lane = _Lane(server)
        # The lane of each graph loop, for the server side's answers and requests to it: read
        # and filled on the server loop only.
        self._graphs: dict[asyncio.AbstractEventLoop, _Lane] = {}

    def post(self, work: Callable[[], None]) -> None:
        """From any thread: run `work` on the server loop, after everything posted before it."""
        self._lane.post(work)

    def _to(self, graph: asyncio.AbstractEventLoop) -> _Lane:
        """On the server loop: the lane of `graph`."""
        lane = self._graphs.get(graph)
        if lane is None:
            lane = self._graphs[graph] = _Lane(graph)
        return lane

    def _send(self, graph: asyncio.AbstractEventLoop, work: Callable[[], None]) -> None:
        """On the server loop: run `work` on `graph`, in order after what was sent before."""
        self._to(graph).post_later(self.server, work)

    async def call(self, start: Callable[[], Awaitable[T]]) -> T:
        """From a graph loop: await `start()` run on the server loop (in order after what was
        posted before) and return its outcome.

        Cancelling the caller does not cancel the server-side call: the caller waits for it to
        end, then is cancelled (what the server side does, such as landing a write, is done).
        """
        graph = asyncio.get_running_loop()
        pending: _Pending[T] = _Pending(graph)

        def begin() -> None:
            task = asyncio.ensure_future(start())
            task.add_done_callback(
                lambda ended: self._send(graph, partial(pending.settle, _Outcome.of(ended)))
            )

        self.post(begin)
        return await pending.outcome(on_cancel=None)

    async def run_on(
        self, graph: asyncio.AbstractEventLoop, start: Callable[[], Awaitable[T]]
    ) -> T:
        """From the server loop: await `start()` run as a task on the `graph` loop and end as it
        ends (its result, its exception or its cancellation).

        Cancelling the caller cancels that task (each time) and waits for it to end: the call
        returns only once the graph-side task has unwound, however long it takes to reach an
        await. Its outcome arrives through the queue, after every event it posted.
        """
        pending: _Pending[T] = _Pending(self.server)
        handle: list[asyncio.Future[T]] = []

        def ended(task: asyncio.Future[T]) -> None:  # on the graph loop
            self.post(partial(pending.settle, _Outcome.of(task)))

        began: list[bool] = []

        async def entered() -> T:
            began.append(True)
            return await start()

        def begin() -> None:
            task = asyncio.ensure_future(entered())
            handle.append(task)
            task.add_done_callback(ended)

        def cancel() -> None:  # on the graph loop, after `begin` (its lane is in order too)
            if began:
                handle[0].cancel()
            else:
                # A task cancelled before its first step never enters its coroutine, so what
                # `start()` does when cut (a LangGraph run waits for its input to land) would
                # be skipped: cancelled once its first step, which `begin` scheduled, has run.
                asyncio.get_running_loop().call_soon(handle[0].cancel)

        if graph.is_closed():
            raise RuntimeError("the graph loop is closed")
        self._send(graph, begin)
        return await pending.outcome(on_cancel=lambda: self._send(graph, cancel))


class _Pending(Generic[T]):
    """On one loop: the outcome of a call the other side runs, once it has sent it.

    The outcome is kept here, not in a future: a future awaited by a task is cancelled with
    the task, and the outcome must outlive that. `_wake` only wakes the waiter (one future
    and no `asyncio.wait`, whose waiter and callbacks cost twice as much per call)."""

    __slots__ = ("_loop", "_outcome", "_wake")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._outcome: _Outcome | None = None
        self._wake: asyncio.Future[None] = loop.create_future()

    def settle(self, outcome: _Outcome) -> None:
        """On the waiter's loop: the other side's outcome arrived."""
        if self._outcome is None:
            self._outcome = outcome
            if not self._wake.done():
                self._wake.set_result(None)

    async def outcome(self, *, on_cancel: Callable[[], Any] | None) -> T:
        """Waits for the outcome, even if cancelled meanwhile (calling `on_cancel` each time,
        if given); then ends as it did, or cancelled if the waiter was cancelled without
        `on_cancel` (the other side's result or error is dropped: it did its work all the
        same)."""
        cancelled = False
        while self._outcome is None:
            try:
                await self._wake
            except asyncio.CancelledError:
                if self._wake.cancelled():  # cancelled with the task: a fresh one to wait on
                    self._wake = self._loop.create_future()
                if on_cancel is None:
                    cancelled = True
                else:
                    on_cancel()
        if cancelled:
            raise asyncio.CancelledError
        outcome: Any = self._outcome.unwrap()
        return cast(T, outcome)


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

    def unwrap(self) -> Any:
        """The value, or raises as the other side's future ended."""
        if self.cancelled:
            raise asyncio.CancelledError
        if self.error is not None:
            raise self.error
        return self.value
