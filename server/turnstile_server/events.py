"""Event hub: every run's stream and every watched thread's stream, each an `EventLog`.

A run's log is dropped `retain_seconds` after the run ends, a thread's once it has been idle
that long.

Sequence numbers never repeat within a run or a thread, across restarts too: attempt `n` of a
run numbers its events from `(n - 1) << 32`, and a thread's watch log from its persistent
epoch `<< 32`, so a position from before a restart reads as expired instead of as new events.
With a relay (Redis), a thread's watch log is numbered and fed by the thread's Redis stream
instead, the same on every replica (`relay/thread_feed.py`).
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

from turnstile_server.event_log import EventLog, LazyEvent, SendBudget, StreamLimits
from turnstile_server.store import RunRecord

SEQ_EPOCH_BITS = 32


class EventEncoder(Protocol):
    """Puts events in the form the streams send: the API layer provides it."""

    def run_event(self, seq: int, run_id: str, event: str, data: Any, *, state: bool) -> bytes:
        """A run's event, framed; raises TypeError or ValueError if `data` is not JSON.

        `state`: `data` is a snapshot of a thread's state, whose messages never change once
        stored (so their encoding may be reused).
        """
        ...

    def thread_event(
        self,
        seq: int,
        *,
        run_started: RunRecord | None = None,
        run_event: bytes | None = None,
        run_ended: RunRecord | None = None,
    ) -> bytes:
        """A thread's event, framed: a run started or ended, or one of its events (a frame
        `run_event` returned)."""
        ...

    def relayed_thread_event(self, seq: int, framed: bytes) -> bytes:
        """A frame `thread_event(0, ...)` returned (on another replica), numbered `seq`."""
        ...


class EventRelay(Protocol):
    """Where the hub tells another process's subscribers of its runs (`relay.Relay`)."""

    def run_started(self, run: RunRecord, events: EventLog, started: bytes) -> None:
        """The run started here: its events are relayed from now on; `started` is the
        thread's event for it, without seq."""
        ...

    def run_ending(self, run: RunRecord, events: EventLog, ended: bytes) -> None:
        """The run ends here: its last events follow at once; `ended` as `started`."""
        ...

    def run_taken(self, run: RunRecord) -> None:
        """The run was taken from an attempt that lost its lease, now at `run.epoch`: that
        attempt publishes nothing more."""
        ...

    def run_lost(self, run_id: str) -> None:
        """This process's attempt of the run lost it: its publisher stops."""
        ...

    async def watch_thread(self, thread_id: str, events: EventLog) -> asyncio.Task[None]:
        """Numbers a new watch log and feeds it with what every process relays of the
        thread, this one's runs included; the task ends with the log (or fails it)."""
        ...

    async def thread_backlog(self, thread_id: str, after_seq: int, until_seq: int) -> list[bytes]:
        """The thread's framed events after `after_seq` up to `until_seq` (from before a
        watch log's first); OutOfRange unless every one of them is retained."""
        ...


class _ThreadLog:
    """A thread's watch log, with what keeps it alive."""

    __slots__ = ("expiry", "feed", "log", "watchers")

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.watchers = 0
        self.expiry: asyncio.TimerHandle | None = None
        self.feed: asyncio.Task[None] | None = None  # what other replicas relay of it

    def stop_feed(self) -> None:
        if self.feed is not None:
            self.feed.cancel()
            self.feed = None


class EventHub:
    """Every run's log by run id, and every watched thread's log by thread id."""

    def __init__(
        self,
        encoder: EventEncoder,
        limits: StreamLimits | None = None,
        *,
        thread_epoch: Callable[[str], Awaitable[int]] | None = None,
        relay: EventRelay | None = None,
    ) -> None:
        self._encoder = encoder
        self.relay = relay
        self.limits = limits or StreamLimits()
        self.send_budget = SendBudget(self.limits.send_budget)
        self._thread_epoch = thread_epoch
        self._runs: dict[str, EventLog] = {}
        # Ended runs in the order they ended: run id -> (retained bytes, when to drop), swept
        # by one timer (every run's retention is the same, so the oldest goes first).
        self._ended: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._sweep: asyncio.TimerHandle | None = None
        self._ended_bytes = 0
        self._running: dict[str, dict[str, RunRecord]] = {}  # thread id -> run id -> run
        self._threads: dict[str, _ThreadLog] = {}
        self._creating: dict[str, asyncio.Future[_ThreadLog]] = {}

    # Runs.

    def open(self, run_id: str) -> EventLog:
        """Returns the run's log, creating it (empty) if needed."""
        log = self._runs.get(run_id)
        if log is None:
            log = self._runs[run_id] = EventLog(f"run {run_id}", self.limits)
        return log

    def get(self, run_id: str) -> EventLog | None:
        """Returns the run's log if it is retained."""
        return self._runs.get(run_id)

    def run_started(self, run: RunRecord) -> None:
        """Numbers the run's events for its attempt and tells the thread's watchers."""
        log = self.open(run.run_id)
        log.rebase((run.attempt - 1) << SEQ_EPOCH_BITS)
        if self.relay is not None:
            self.relay.run_started(run, log, self._encoder.thread_event(0, run_started=run))
        self._running.setdefault(run.thread_id, {})[run.run_id] = run
        thread = self._local_thread(run.thread_id)
        if thread is not None:
            thread.log.append(self._thread_event(run_started=run))

    def run_taken(self, run: RunRecord) -> None:
        """The run was taken over from a replica whose lease expired (see `EventRelay`),
        maybe this one's earlier lease: then its attempt here lost the run (`run_lost`)."""
        if self.relay is not None:
            self.relay.run_taken(run)
        self.run_lost(run)

    def run_lost(self, run: RunRecord) -> None:
        """This replica's attempt of the run lost it (its lease lapsed, it was taken over).

        With a relay, the attempt's log goes, as it would with a replica that died: the run's
        later events and its end (another attempt's, or a cancel written here) are read from
        Redis or numbered after the attempt's (`run_ended`), never appended to a log whose
        attempt is fenced, whose publisher would be refused them. Local followers get
        OutOfRange (STREAM_EXPIRED): what the attempt emitted after its last published event
        is not the run's. Without a relay the log is the run's only stream and stays."""
        if self.relay is None:
            return
        log = self._runs.get(run.run_id)
        if log is None or log.ended:
            return
        self.relay.run_lost(run.run_id)
        del self._runs[run.run_id]
        log.expire()
        running = self._running.get(run.thread_id, {})
        running.pop(run.run_id, None)
        if not running:
            self._running.pop(run.thread_id, None)

    def emit(self, run: RunRecord, event: str, data: Any, *, checked: bool = False) -> None:
        """Appends an event to the run's log (and its thread's); raises if `data` is not JSON.

        `checked` data is known to be JSON (the store's records, normalised updates): unless
        the thread is watched, it is encoded only if a subscriber reads it.
        """
        state = checked and event == "values"  # a snapshot of the thread's state
        thread = self._local_thread(run.thread_id)
        if checked and thread is None:
            self.open(run.run_id).append(_RunEvent(self._encoder, run.run_id, event, data, state))
            return
        framed: bytes | None = None

        def encode(seq: int) -> bytes:
            nonlocal framed
            framed = self._encoder.run_event(seq, run.run_id, event, data, state=state)
            return framed

        self.open(run.run_id).append(encode)
        if thread is not None and framed is not None:
            thread.log.append(self._thread_event(run_event=framed))

    def run_ended(self, run: RunRecord, end: dict[str, Any], *, error: Any = None) -> None:
        """Emits the run's `error` (if any) and `end` events, once; tells the thread's watchers."""
        started = self._running.get(run.thread_id, {}).get(run.run_id)
        if started is not None and started.epoch < run.epoch:
            # Ended in the database after its attempt here lost it (taken over, then
            # cancelled by an admission here before that attempt unwound).
            self.run_lost(started)
        log = self.open(run.run_id)
        if log.ended:
            return
        # A run that never started here numbers its events after its last attempt's.
        log.rebase(run.attempt << SEQ_EPOCH_BITS)
        if self.relay is not None:
            self.relay.run_ending(run, log, self._encoder.thread_event(0, run_ended=run))
        # Both are built by the scheduler from the run's record: known to be JSON.
        if error is not None:
            self.emit(run, "error", error, checked=True)
        self.emit(run, "end", end, checked=True)
        log.end()
        self._retire(run.run_id, log)
        running = self._running.get(run.thread_id, {})
        running.pop(run.run_id, None)
        if not running:
            self._running.pop(run.thread_id, None)
        thread = self._threads.get(run.thread_id)
        if thread is not None:
            if self.relay is None:
                thread.log.append(self._thread_event(run_ended=run))
            self._touch(run.thread_id, thread)

    def _retire(self, run_id: str, log: EventLog) -> None:
        """Keeps an ended run's log for `retain_seconds`, within the total byte budget."""
        loop = asyncio.get_running_loop()
        self._ended[run_id] = (log.nbytes, loop.time() + self.limits.retain_seconds)
        self._ended_bytes += log.nbytes
        log.resized = functools.partial(self._resized, run_id, log)
        self._within_budget()
        if self._sweep is None:
            self._sweep = loop.call_later(self.limits.retain_seconds, self._swept)

    def _resized(self, run_id: str, log: EventLog) -> None:
        """Counts an ended run's log again after a replay encoded some of its events."""
        retained = self._ended.get(run_id)
        if retained is None or self._runs.get(run_id) is not log:
            return
        self._ended[run_id] = (log.nbytes, retained[1])
        self._ended_bytes += log.nbytes - retained[0]
        self._within_budget()

    def _within_budget(self) -> None:
        """Drops the oldest ended runs while they hold more than `retained_bytes` (one stays)."""
        while self._ended_bytes > self.limits.retained_bytes and len(self._ended) > 1:
            self._drop(next(iter(self._ended)))

    def _swept(self) -> None:
        """Drops the ended runs whose retention is over; waits for the next one's."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._ended:
            run_id, (_, deadline) = next(iter(self._ended.items()))
            if deadline > now:
                self._sweep = loop.call_at(deadline, self._swept)
                return
            self._drop(run_id)

    def _drop(self, run_id: str) -> None:
        log = self._runs.pop(run_id, None)
        if log is not None:
            log.resized = None
            log.expire()
        retained = self._ended.pop(run_id, None)
        if retained is not None:
            self._ended_bytes -= retained[0]

    # Threads.

    def _local_thread(self, thread_id: str) -> _ThreadLog | None:
        """The thread's watch log if this hub numbers and appends to it: without a relay
        (with one, every replica's log is fed from the thread's Redis stream)."""
        return self._threads.get(thread_id) if self.relay is None else None

    async def thread_log(self, thread_id: str) -> EventLog:
        """Returns the thread's watch log, creating it with a fresh epoch if needed."""
        return (await self._thread(thread_id)).log

    async def _thread(self, thread_id: str) -> _ThreadLog:
        thread = self._threads.get(thread_id)
        if thread is not None and thread.log.failure is not None:  # its feed failed: anew
            self._threads.pop(thread_id)
            thread.stop_feed()
            if thread.expiry is not None:
                thread.expiry.cancel()
            thread = None
        if thread is not None:
            return thread
        pending = self._creating.get(thread_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_ThreadLog] = asyncio.get_running_loop().create_future()
        self._creating[thread_id] = future
        try:
            if self.relay is not None:  # numbered by the thread's stream, the relay's feed
                log = EventLog(f"thread {thread_id}", self.limits, from_oldest=True)
                thread = _ThreadLog(log)
                thread.feed = await self.relay.watch_thread(thread_id, log)
            else:
                epoch = await self._thread_epoch(thread_id) if self._thread_epoch else 0
                log = EventLog(
                    f"thread {thread_id}", self.limits, epoch << SEQ_EPOCH_BITS, from_oldest=True
                )
                self._seed(log, thread_id)
                thread = _ThreadLog(log)
            self._threads[thread_id] = thread
            future.set_result(thread)
            self._touch(thread_id, thread)
            return thread
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: concurrent creators re-raise it, or nobody does
            raise
        finally:
            del self._creating[thread_id]

    def _seed(self, log: EventLog, thread_id: str) -> None:
        """Starts a new watch log with the thread's running runs and their events so far."""
        for run in self._running.get(thread_id, {}).values():
            log.append(self._thread_event(run_started=run))
            run_log = self._runs.get(run.run_id)
            if run_log is not None:
                for frame in run_log.read(run_log.first_seq - 1, len(run_log), 1 << 62):
                    log.append(self._thread_event(run_event=frame))

    @asynccontextmanager
    async def watching(self, thread_id: str) -> AsyncIterator[EventLog]:
        """The thread's watch log, kept while the `async with` block runs."""
        thread = await self._thread(thread_id)
        thread.watchers += 1
        try:
            yield thread.log
        finally:
            thread.watchers -= 1
            self._touch(thread_id, thread)

    def thread_deleted(self, thread_id: str) -> None:
        """Ends the thread's watch log: its watchers stop after the last event."""
        self._running.pop(thread_id, None)
        thread = self._threads.pop(thread_id, None)
        if thread is not None:
            if thread.expiry is not None:
                thread.expiry.cancel()
            thread.stop_feed()
            thread.log.end()

    def _touch(self, thread_id: str, thread: _ThreadLog) -> None:
        """(Re)starts the thread log's idle timer; it is dropped when the timer fires idle."""
        if thread.expiry is not None:
            thread.expiry.cancel()
            thread.expiry = None
        if (
            thread.watchers
            or thread_id in self._running
            or self._threads.get(thread_id) is not thread
        ):
            return
        loop = asyncio.get_running_loop()
        thread.expiry = loop.call_later(
            self.limits.retain_seconds, self._drop_thread, thread_id, thread
        )

    def _drop_thread(self, thread_id: str, thread: _ThreadLog) -> None:
        idle = not thread.watchers and thread_id not in self._running
        if idle and self._threads.get(thread_id) is thread:
            del self._threads[thread_id]
            thread.stop_feed()
            thread.log.expire()

    def _thread_event(
        self,
        *,
        run_started: RunRecord | None = None,
        run_event: bytes | None = None,
        run_ended: RunRecord | None = None,
    ) -> Callable[[int], bytes]:
        """The encoder of one thread event, for `EventLog.append`."""
        return functools.partial(
            self._encoder.thread_event,
            run_started=run_started,
            run_event=run_event,
            run_ended=run_ended,
        )

    def close(self) -> None:
        """Cancels the removal timers (on shutdown)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for thread in self._threads.values():
            thread.stop_feed()
            if thread.expiry is not None:
                thread.expiry.cancel()
                thread.expiry = None


class _RunEvent(LazyEvent):
    """A run's event whose data is known to be JSON, encoded when first read."""

    __slots__ = ("data", "encoder", "event", "run_id", "state")

    def __init__(
        self, encoder: EventEncoder, run_id: str, event: str, data: Any, state: bool
    ) -> None:
        super().__init__(_estimate(data))
        self.encoder = encoder
        self.run_id = run_id
        self.event = event
        self.data = data
        self.state = state

    def encode(self, seq: int) -> bytes:
        return self.encoder.run_event(seq, self.run_id, self.event, self.data, state=self.state)


def _estimate(data: Any) -> int:
    """What an event not encoded yet counts as: its own objects, not the messages it shares
    with the thread's state (a `values` event refers to them)."""
    if isinstance(data, dict):
        messages = data.get("messages")
        return 64 + 32 * len(data) + (8 * len(messages) if isinstance(messages, list) else 0)
    return 64
