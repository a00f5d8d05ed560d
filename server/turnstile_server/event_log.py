"""Event logs: one stream's events, bounded and resumable, and a subscriber's position in them.

A log holds its events encoded once, as they go on the wire, so any number of subscribers cost
no copies: each subscriber is a position in the log. Logs keep at most `max_events` events and
`max_bytes` bytes (the oldest go first). Asking for events that are gone is an `OutOfRange`
error, never a silent gap.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from turnstile_server.errors import OutOfRange, SubscriberTooSlow, TurnstileError


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
    send_budget: int = 64 << 20


class LazyEvent:
    """An event not encoded yet: it is encoded when first read, as most runs' events never are
    (a `WaitRun` caller reads none). Until then it counts as `size` bytes.

    One small object per event, not a closure: a run's events are kept for minutes after it
    ends, and each closure's cells and functions were objects the garbage collector walked at
    every full collection.
    """

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, seq: int) -> bytes:
        """The framed event, numbered `seq`."""
        raise NotImplementedError


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
        "failure",
        "from_oldest",
        "limits",
        "name",
        "resized",
    )

    def __init__(
        self, name: str, limits: StreamLimits, base: int | None = None, *, from_oldest: bool = False
    ) -> None:
        self.name = name
        self.from_oldest = from_oldest
        self.limits = limits
        self._frames: deque[bytes | LazyEvent] = deque()
        self._bytes = 0
        self._base = base
        self._first = (base or 0) + 1
        self._changed: asyncio.Event | None = None  # made when a subscriber first waits
        self.ended = False
        self.expired = False
        self.failure: TurnstileError | None = None
        # Told when reading encodes lazy events, so that an owner counting this log's bytes
        # against a budget of its own (the hub, for ended runs) sees them too.
        self.resized: Callable[[], None] | None = None

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

    def append(self, event: Callable[[int], bytes] | LazyEvent) -> int:
        """Appends an event for the next `seq` and returns that `seq`: the framed bytes
        `event(seq)` returns, or a `LazyEvent`, encoded only when first read."""
        if self.ended:
            raise RuntimeError(f"{self.name} has ended")
        if self._base is None:
            self._base = 0
        seq = self.last_seq + 1
        if isinstance(event, LazyEvent):
            frame: bytes | LazyEvent = event
            size = event.size
        else:
            frame = event(seq)
            size = len(frame)
        self._frames.append(frame)
        self._bytes += size
        self._trim()
        self._wake()
        return seq

    def _trim(self) -> None:
        """Evicts the oldest events until the log is within its limits (the newest stays)."""
        limits = self.limits
        while len(self._frames) > 1 and (
            len(self._frames) > limits.max_events or self._bytes > limits.max_bytes
        ):
            self._bytes -= _size(self._frames.popleft())
            self._first += 1

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

    def fail(self, error: TurnstileError) -> None:
        """Ends the log with `error`: subscribers still reading get it (the events it is fed
        with can no longer be had, e.g. from Redis)."""
        self.failure = error
        self.ended = True
        self._wake()

    def read(self, after_seq: int, max_events: int, max_bytes: int) -> list[bytes]:
        """Returns the events after `after_seq` (retained, see `first_seq`), within limits.

        Lazy events read are encoded, and their bytes count from then on: past `max_bytes`
        the oldest events go, as on append, and the owner is told (see `resized`).
        """
        start = after_seq + 1 - self._first
        frames: list[bytes] = []
        size = 0
        grown = 0
        for index in range(start, min(len(self._frames), start + max_events)):
            frame = self._frames[index]
            if isinstance(frame, LazyEvent):
                lazy, frame = frame, frame.encode(self._first + index)
                self._frames[index] = frame
                grown += len(frame) - lazy.size
            if frames and size + len(frame) > max_bytes:
                break
            frames.append(frame)
            size += len(frame)
        if grown:
            self._bytes += grown
            self._trim()
            if self.resized is not None:
                self.resized()
        return frames

    async def changed(self) -> None:
        """Returns after the next append, end or expiry."""
        if self._changed is None:
            self._changed = asyncio.Event()
        await self._changed.wait()

    def _wake(self) -> None:
        # Every waiter is released by `set`; clearing at once re-arms the event for the next.
        if self._changed is not None:
            self._changed.set()
            self._changed.clear()


class SendBudget:
    """The bytes of events larger than a batch that subscribers have handed to gRPC and that
    are not sent yet, over all subscribers, within `capacity`.

    gRPC copies every message it is given and holds the copy until the client's flow-control
    window takes it, so a subscriber that stops reading holds its last message. Batches are
    bounded by `batch_bytes`; an event larger than that goes alone and takes its size from
    this budget first, released once gRPC has sent it. Room is granted in the order it was
    asked for; one event larger than the whole budget is sent when nothing else is held.
    """

    __slots__ = ("_used", "_waiters", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def used(self) -> int:
        """The bytes held now."""
        return self._used

    async def acquire(self, size: int) -> None:
        """Returns once `size` bytes are held for the caller (who must `release` them)."""
        if not self._waiters and self._fits(size):
            self._used += size
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiters.append((size, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(size)  # granted as the caller was cancelled
            else:
                if (size, granted) in self._waiters:
                    self._waiters.remove((size, granted))
                self._grant()  # the waiters behind it may fit now
            raise

    def release(self, size: int) -> None:
        """Returns `size` bytes to the budget and grants the waiters that now fit."""
        self._used -= size
        self._grant()

    def _fits(self, size: int) -> bool:
        return not self._used or self._used + size <= self.capacity

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            size, granted = self._waiters.popleft()
            if not granted.done():
                self._used += size
                granted.set_result(None)


async def follow(
    log: EventLog,
    after_seq: int,
    limits: StreamLimits,
    *,
    what: dict[str, str],
    live: bool = False,
    budget: SendBudget | None = None,
) -> AsyncIterator[list[bytes]]:
    """Yields the log's events after `after_seq`, then new ones as they come, until it ends.

    A subscriber is "live" once it has caught up (or from the start, with `live`: the run's
    own caller); a live subscriber that falls more than `max_lag` events behind is ended with
    `SubscriberTooSlow`, while the events it misses are still retained, so that it can resume.
    Replaying is never too slow.

    A batch is at most `batch_bytes`, or one larger event alone: the log's own bytes, shared
    by every subscriber, whose size is held from `budget` until the caller asks for the next
    batch (for a gRPC handler: once gRPC has sent it).
    """
    position = after_seq
    placed = after_seq != 0  # 0 means the log's origin, known once the log is numbered
    while True:
        if log.failure is not None:
            raise log.failure
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
                held = len(frames[0]) if len(frames) == 1 else 0
                if budget is None or held <= limits.batch_bytes:
                    yield frames
                    continue
                await budget.acquire(held)
                try:
                    yield frames
                finally:
                    budget.release(held)
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
    if log.failure is not None:
        raise log.failure
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


def _size(frame: bytes | LazyEvent) -> int:
    return frame.size if isinstance(frame, LazyEvent) else len(frame)
