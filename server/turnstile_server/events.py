"""Event logs: every run's stream and every watched thread's stream, bounded and resumable.

A log holds its events encoded once, as they go on the wire, so any number of subscribers cost
no copies: each subscriber is a position in the log. Logs keep at most `max_events` events and
`max_bytes` bytes (the oldest go first); a run's log is dropped `retain_seconds` after the run
ends, a thread's once it has been idle that long. Asking for events that are gone is an
`OutOfRange` error, never a silent gap.

Sequence numbers never repeat within a run or a thread, across restarts too: attempt `n` of a
run numbers its events from `(n - 1) << 32`, and a thread's watch log from its persistent
epoch `<< 32`, so a position from before a restart reads as expired instead of as new events.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from turnstile.v1 import run_pb2
from turnstile_server import encoding, wire
from turnstile_server.errors import OutOfRange, SubscriberTooSlow
from turnstile_server.store import RunRecord

SEQ_EPOCH_BITS = 32


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How much of the streams the server keeps, and how far behind a subscriber may fall."""

    retain_seconds: float = 600.0
    max_events: int = 100_000
    max_bytes: int = 64 << 20
    retained_bytes: int = 256 << 20
    max_lag: int = 10_000
    batch_events: int = 512
    batch_bytes: int = 256 << 10


class _Lazy:
    """An event not encoded yet: it is encoded when first read, as most runs' events never are
    (a `WaitRun` caller reads none). Until then it counts as `size` bytes."""

    __slots__ = ("encode", "size")

    def __init__(self, encode: Callable[[], bytes], size: int) -> None:
        self.encode = encode
        self.size = size


class EventLog:
    """Encoded events in `seq` order; the newest `max_events` / `max_bytes` are kept."""

    __slots__ = (
        "_base",
        "_bytes",
        "_changed",
        "_first",
        "_frames",
        "ended",
        "expired",
        "from_oldest",
        "limits",
        "name",
    )

    def __init__(
        self, name: str, limits: StreamLimits, base: int | None = None, *, from_oldest: bool = False
    ) -> None:
        self.name = name
        self.from_oldest = from_oldest
        self.limits = limits
        self._frames: deque[bytes | _Lazy] = deque()
        self._bytes = 0
        self._base = base
        self._first = (base or 0) + 1
        self._changed = asyncio.Event()
        self.ended = False
        self.expired = False

    @property
    def numbered(self) -> bool:
        """Whether the log's numbering is fixed (an event was appended, or a base was set)."""
        return self._base is not None

    @property
    def origin(self) -> int:
        """What `after_seq=0` means: the start of the numbering, or the oldest retained event."""
        if self.from_oldest:
            return self._first - 1
        return self._base or 0

    @property
    def first_seq(self) -> int:
        """The `seq` of the oldest retained event (one past `last_seq` when there is none)."""
        return self._first

    @property
    def last_seq(self) -> int:
        """The `seq` of the newest event; the base when there is none yet."""
        return self._first + len(self._frames) - 1

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        """The encoded size of the retained events."""
        return self._bytes

    def rebase(self, base: int) -> None:
        """Numbers the first event `base + 1`, unless the numbering is fixed already."""
        if self._base is not None:
            return
        self._base = base
        self._first = base + 1

    def append(self, encode: Callable[[int], bytes], *, lazy_size: int | None = None) -> int:
        """Appends the event `encode(seq)` returns for the next `seq`, and returns that `seq`.

        With `lazy_size`, `encode` is called only when the event is first read, and the event
        counts as that many bytes until then: for data known to encode (checked JSON).
        """
        if self.ended:
            raise RuntimeError(f"{self.name} has ended")
        if self._base is None:
            self._base = 0
        seq = self.last_seq + 1
        if lazy_size is None:
            encoded = encode(seq)
            frame: bytes | _Lazy = encoded
            size = len(encoded)
        else:
            frame, size = _Lazy(lambda: encode(seq), lazy_size), lazy_size
        self._frames.append(frame)
        self._bytes += size
        limits = self.limits
        while len(self._frames) > 1 and (
            len(self._frames) > limits.max_events or self._bytes > limits.max_bytes
        ):
            self._bytes -= _size(self._frames.popleft())
            self._first += 1
        self._wake()
        return seq

    def end(self) -> None:
        """Marks the log complete: subscribers stop after its last event."""
        self.ended = True
        self._wake()

    def expire(self) -> None:
        """Drops every event: subscribers still reading get `OutOfRange`."""
        self.expired = True
        self.ended = True
        self._frames.clear()
        self._bytes = 0
        self._wake()

    def read(self, after_seq: int, max_events: int, max_bytes: int) -> list[bytes]:
        """Returns the events after `after_seq` (retained, see `first_seq`), within limits."""
        start = after_seq + 1 - self._first
        frames: list[bytes] = []
        size = 0
        for index in range(start, min(len(self._frames), start + max_events)):
            frame = self._frames[index]
            if isinstance(frame, _Lazy):
                lazy, frame = frame, frame.encode()
                self._frames[index] = frame
                self._bytes += len(frame) - lazy.size
            if frames and size + len(frame) > max_bytes:
                break
            frames.append(frame)
            size += len(frame)
        return frames

    async def changed(self) -> None:
        """Returns after the next append, end or expiry."""
        await self._changed.wait()

    def _wake(self) -> None:
        # Every waiter is released by `set`; clearing at once re-arms the event for the next.
        self._changed.set()
        self._changed.clear()


async def follow(
    log: EventLog,
    after_seq: int,
    limits: StreamLimits,
    *,
    what: dict[str, str],
    live: bool = False,
) -> AsyncIterator[list[bytes]]:
    """Yields the log's events after `after_seq`, then new ones as they come, until it ends.

    A subscriber is "live" once it has caught up (or from the start, with `live`: the run's
    own caller); a live subscriber that falls more than `max_lag` events behind is ended with
    `SubscriberTooSlow`, while the events it misses are still retained, so that it can resume.
    Replaying is never too slow.
    """
    position = after_seq
    placed = after_seq != 0  # 0 means the log's origin, known once the log is numbered
    while True:
        if log.expired:
            raise _expired(log, position, what)
        if log.numbered:
            if not placed:
                position, placed = log.origin, True
            if position < log.first_seq - 1:
                if live:
                    raise _too_slow(log, position, what)
                raise _expired(log, position, what)
            behind = log.last_seq - position
            if live and behind > limits.max_lag:
                raise _too_slow(log, position, what)
            if behind > 0:
                frames = log.read(position, limits.batch_events, limits.batch_bytes)
                position += len(frames)
                yield frames
                continue
            if log.ended:
                if position > log.last_seq:
                    raise _past_end(log, position, what)
                return
        elif log.ended:
            return
        live = True
        await log.changed()


def check_position(log: EventLog, after_seq: int, *, what: dict[str, str]) -> None:
    """Raises what `follow` would at once for `after_seq`, before anything is sent."""
    if after_seq == 0 and log.numbered:
        after_seq = log.origin
    if log.expired or (log.numbered and after_seq < log.first_seq - 1):
        raise _expired(log, after_seq, what)
    if log.ended and after_seq > log.last_seq:
        raise _past_end(log, after_seq, what)


def _expired(log: EventLog, position: int, what: dict[str, str]) -> OutOfRange:
    return OutOfRange(
        f"the events of {log.name} after seq {position} are no longer retained",
        metadata={**what, "after_seq": str(position), "first_seq": str(log.first_seq)},
    )


def _past_end(log: EventLog, position: int, what: dict[str, str]) -> OutOfRange:
    return OutOfRange(
        f"{log.name} ended at seq {log.last_seq}; after_seq {position} is past it",
        metadata={**what, "last_seq": str(log.last_seq)},
    )


def _too_slow(log: EventLog, position: int, what: dict[str, str]) -> SubscriberTooSlow:
    return SubscriberTooSlow(
        f"this subscriber fell {log.last_seq - position} events behind {log.name};"
        f" resume with after_seq={position}",
        metadata={**what, "last_seq": str(position)},
    )


class _ThreadLog:
    """A thread's watch log, with what keeps it alive."""

    __slots__ = ("expiry", "log", "watchers")

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.watchers = 0
        self.expiry: asyncio.TimerHandle | None = None


class EventHub:
    """Every run's log by run id, and every watched thread's log by thread id."""

    def __init__(
        self,
        limits: StreamLimits | None = None,
        *,
        thread_epoch: Callable[[str], Awaitable[int]] | None = None,
    ) -> None:
        self.limits = limits or StreamLimits()
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
        self.open(run.run_id).rebase((run.attempt - 1) << SEQ_EPOCH_BITS)
        self._running.setdefault(run.thread_id, {})[run.run_id] = run
        thread = self._threads.get(run.thread_id)
        if thread is not None:
            thread.log.append(_encoder(run_started=wire.run_message(run)))

    def emit(self, run: RunRecord, event: str, data: Any, *, checked: bool = False) -> None:
        """Appends an event to the run's log (and its thread's); raises if `data` is not JSON.

        `checked` data is known to be JSON (the store's records, normalised updates): unless
        the thread is watched, it is encoded only if a subscriber reads it.
        """
        payload: bytes | None = None

        def encode(seq: int) -> bytes:
            nonlocal payload
            payload = encoding.run_event(seq, run.run_id, event, data, state=checked)
            return encoding.frame(payload)

        thread = self._threads.get(run.thread_id)
        if checked and thread is None:
            self.open(run.run_id).append(encode, lazy_size=_estimate(data))
            return
        self.open(run.run_id).append(encode)
        if thread is not None and payload is not None:
            thread.log.append(_encoder(run_event=payload))

    def run_ended(self, run: RunRecord, end: dict[str, Any], *, error: Any = None) -> None:
        """Emits the run's `error` (if any) and `end` events, once; tells the thread's watchers."""
        log = self.open(run.run_id)
        if log.ended:
            return
        # A run that never started here numbers its events after its last attempt's.
        log.rebase(run.attempt << SEQ_EPOCH_BITS)
        if error is not None:
            self.emit(run, "error", error)
        self.emit(run, "end", end)
        log.end()
        self._retire(run.run_id, log)
        running = self._running.get(run.thread_id, {})
        running.pop(run.run_id, None)
        if not running:
            self._running.pop(run.thread_id, None)
        thread = self._threads.get(run.thread_id)
        if thread is not None:
            thread.log.append(_encoder(run_ended=wire.run_message(run)))
            self._touch(run.thread_id, thread)

    def _retire(self, run_id: str, log: EventLog) -> None:
        """Keeps an ended run's log for `retain_seconds`, within the total byte budget."""
        loop = asyncio.get_running_loop()
        self._ended[run_id] = (log.nbytes, loop.time() + self.limits.retain_seconds)
        self._ended_bytes += log.nbytes
        while self._ended_bytes > self.limits.retained_bytes and len(self._ended) > 1:
            oldest = next(iter(self._ended))
            self._drop(oldest)
        if self._sweep is None:
            self._sweep = loop.call_later(self.limits.retain_seconds, self._swept)

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
            log.expire()
        retained = self._ended.pop(run_id, None)
        if retained is not None:
            self._ended_bytes -= retained[0]

    # Threads.

    async def thread_log(self, thread_id: str) -> EventLog:
        """Returns the thread's watch log, creating it with a fresh epoch if needed."""
        return (await self._thread(thread_id)).log

    async def _thread(self, thread_id: str) -> _ThreadLog:
        thread = self._threads.get(thread_id)
        if thread is not None:
            return thread
        pending = self._creating.get(thread_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_ThreadLog] = asyncio.get_running_loop().create_future()
        self._creating[thread_id] = future
        try:
            epoch = await self._thread_epoch(thread_id) if self._thread_epoch else 0
            log = EventLog(
                f"thread {thread_id}", self.limits, epoch << SEQ_EPOCH_BITS, from_oldest=True
            )
            self._seed(log, thread_id)
            thread = self._threads[thread_id] = _ThreadLog(log)
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
            log.append(_encoder(run_started=wire.run_message(run)))
            run_log = self._runs.get(run.run_id)
            if run_log is not None:
                for frame in run_log.read(run_log.first_seq - 1, len(run_log), 1 << 62):
                    log.append(_encoder(run_event=encoding.unframe(frame)))

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
            thread.log.expire()

    def close(self) -> None:
        """Cancels the removal timers (on shutdown)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for thread in self._threads.values():
            if thread.expiry is not None:
                thread.expiry.cancel()
                thread.expiry = None


def _encoder(
    *,
    run_started: run_pb2.Run | None = None,
    run_event: bytes | None = None,
    run_ended: run_pb2.Run | None = None,
) -> Callable[[int], bytes]:
    """Returns the encoder of one thread event, for `EventLog.append`."""

    def encode(seq: int) -> bytes:
        return encoding.thread_event_frame(
            seq, run_started=run_started, run_event=run_event, run_ended=run_ended
        )

    return encode


def _size(frame: bytes | _Lazy) -> int:
    return frame.size if isinstance(frame, _Lazy) else len(frame)


def _estimate(data: Any) -> int:
    """What an event not encoded yet counts as: its own objects, not the messages it shares
    with the thread's state (a `values` event refers to them)."""
    if isinstance(data, dict):
        messages = data.get("messages")
        return 64 + 32 * len(data) + (8 * len(messages) if isinstance(messages, list) else 0)
    return 64
