"""`RunStream` and `ThreadStream`: event streams that reconnect after the last part seen."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, Callable
from types import TracebackType
from typing import Final, Generic, Self, TypeAlias, TypeVar

from google.protobuf.message import Message

from turnstile._convert import event_part, run_to_dict, thread_event_part, thread_to_dict
from turnstile._errors import ResourceExhaustedError, TurnstileError, UnavailableError
from turnstile._types import Run, StreamPart, Thread, ThreadStreamPart
from turnstile.v1 import run_pb2, run_service_pb2, thread_service_pb2

logger = logging.getLogger(__name__)

StreamMessage: TypeAlias = run_service_pb2.StreamRunResponse | run_service_pb2.JoinRunStreamResponse
WatchMessage: TypeAlias = thread_service_pb2.WatchThreadResponse

RECONNECT_ATTEMPTS: Final = 5
"""Consecutive reconnects that may fail before a stream gives up and raises the last error."""
RECONNECT_BACKOFF: Final = 0.1
"""Seconds before the first reconnect after a break; doubled for each further failed one."""
RECONNECT_MAX_BACKOFF: Final = 2.0
"""The longest pause before a reconnect, in seconds."""
SUBSCRIBER_TOO_SLOW: Final = "SUBSCRIBER_TOO_SLOW"
"""The reason of the `RESOURCE_EXHAUSTED` that ends a reader who fell too far behind."""
ENDED_STATUSES: Final = frozenset(
    {
        run_pb2.RUN_STATUS_SUCCESS,
        run_pb2.RUN_STATUS_ERROR,
        run_pb2.RUN_STATUS_TIMEOUT,
        run_pb2.RUN_STATUS_INTERRUPTED,
    }
)
"""The statuses of a run that has ended (its `end` event is written before it is sent)."""

# Looked up at each pause, so tests can observe the backoff without waiting for it.
_sleep = asyncio.sleep

_M = TypeVar("_M", bound=Message)
_P = TypeVar("_P")


def reconnect_delay(failures: int) -> float:
    """Seconds to pause before the reconnect that follows `failures` consecutive breaks."""
    return min(RECONNECT_BACKOFF * 2.0 ** (failures - 1), RECONNECT_MAX_BACKOFF)


class EventStream(ABC, Generic[_M, _P]):
    """Yields the parts of a server stream, resuming it after the last `seq` when it breaks.

    A call that fails with `UNAVAILABLE`, or ends before the stream's final event, is made
    again after a pause of `reconnect_delay(n)` for the n-th consecutive break; one that a
    server ended with `SUBSCRIBER_TOO_SLOW` is made again at once. After
    `RECONNECT_ATTEMPTS` consecutive failed reconnects the last error is raised; a reconnect
    that delivers a message resets the count, except that a call which ends without a new
    part is a failure whatever it delivered (so a server that keeps answering "nothing new"
    cannot keep a reader reconnecting forever). A call whose end `_ends_stream` says is the
    stream's end completes the stream. Events at or before the last `seq` seen are skipped, so
    the caller sees each part once, in order. Any other error is raised as is.
    """

    _ended_early = "the stream ended before its final event"
    """The message of the `UnavailableError` raised when every reconnect ends that way."""

    def __init__(self, after_seq: int) -> None:
        self._last_seq = after_seq
        self._messages: AsyncGenerator[_M, None] | None = None
        self._pending: deque[_P] = deque()
        self._failures = 0
        self._failures_before_call = 0
        self._call_progressed = False
        self._complete = False
        self._done = False

    @abstractmethod
    def _open(self) -> AsyncGenerator[_M, None]:
        """Starts a call that delivers the stream's messages after `self._last_seq`."""

    @abstractmethod
    def _receive(self, message: _M) -> None:
        """Queues the message's new parts, advances `_last_seq`, sets `_complete` at the end."""

    def _ends_stream(self) -> bool:
        """Whether the current call, ended by the server without error and without a new part,
        means there is nothing more to read (rather than a break to resume)."""
        return False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> _P:
        while not self._pending:
            if self._complete or self._done:
                await self.aclose()
                raise StopAsyncIteration
            try:
                message = await self._next_message()
            except BaseException:
                # An error we do not reconnect after, or a cancellation, ends the stream.
                self._done = True
                raise
            if message is None:
                self._complete = True
                continue
            before = self._last_seq
            self._receive(message)
            if self._last_seq != before:
                self._call_progressed = True
        return self._pending.popleft()

    async def _next_message(self) -> _M | None:
        """The next message, reconnecting after breaks; `None` once the stream is complete."""
        while True:
            if self._messages is None:
                self._messages = self._open()
                self._failures_before_call = self._failures
                self._call_progressed = False
            try:
                message = await anext(self._messages)
            except StopAsyncIteration:
                if not self._call_progressed:
                    if self._ends_stream():
                        self._messages = None
                        return None
                    # Nothing new: whatever this call delivered, it was no successful reconnect.
                    self._failures = self._failures_before_call
                error: TurnstileError = UnavailableError(self._ended_early)
                pause = True
            except UnavailableError as exc:
                error, pause = exc, True
            except ResourceExhaustedError as exc:
                if exc.reason != SUBSCRIBER_TOO_SLOW:
                    raise
                # The server dropped us to protect itself; the events are still there.
                error, pause = exc, False
            else:
                self._failures = 0
                return message
            self._messages = None
            self._failures += 1
            if self._failures > RECONNECT_ATTEMPTS:
                raise error
            delay = reconnect_delay(self._failures) if pause else 0.0
            logger.debug(
                "stream broke (%s); reconnecting after seq %d in %.1f s",
                error,
                self._last_seq,
                delay,
            )
            if pause:
                await _sleep(delay)

    async def aclose(self) -> None:
        """Stops the stream and cancels its call; iterating afterwards ends at once."""
        self._done = True
        self._pending.clear()
        messages, self._messages = self._messages, None
        if messages is not None:
            await messages.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class RunStream(EventStream[StreamMessage, StreamPart]):
    """Yields one `StreamPart` per event of a run, ending after the `end` event.

    The call starts on the first iteration. `run` is the `Run` the server sends with its first
    message (as it was when the stream opened), `None` until then. A call that breaks
    (`UNAVAILABLE`, or an end before the `end` event) is resumed after the last part seen,
    with a backoff of 0.1 s doubling up to 2 s, giving up after 5 failed reconnects in a row;
    see `EventStream`. Break out early with `aclose()` or `async with`, which cancels the call.
    """

    _ended_early = "the run's stream ended before its end event"

    def __init__(
        self,
        open_messages: Callable[[Run | None, int], AsyncGenerator[StreamMessage, None]],
        *,
        after_seq: int = 0,
    ) -> None:
        """`open_messages(run, after_seq)` starts a call; `run` is `None` until one arrived."""
        super().__init__(after_seq)
        self._open_messages = open_messages
        self.run: Run | None = None
        self._call_saw_run_ended = False

    def _open(self) -> AsyncGenerator[StreamMessage, None]:
        self._call_saw_run_ended = False
        return self._open_messages(self.run, self._last_seq)

    def _receive(self, message: StreamMessage) -> None:
        if message.HasField("run"):
            self._call_saw_run_ended = message.run.status in ENDED_STATUSES
            if self.run is None:
                self.run = run_to_dict(message.run)
        for event in message.events:
            if event.seq <= self._last_seq:
                continue
            self._last_seq = event.seq
            self._pending.append(event_part(event))
            if event.event == "end":
                self._complete = True
                return

    def _ends_stream(self) -> bool:
        # The server ends a call without error only after the run's `end` event. A run that had
        # ended when the call opened, with nothing after our seq, has its `end` at or before
        # it: the caller resumed after the last event (`after_seq` = the end's seq).
        return self._call_saw_run_ended


class ThreadStream(EventStream[WatchMessage, ThreadStreamPart]):
    """Yields one `ThreadStreamPart` per event of a thread, until closed.

    The call starts on the first iteration. `thread` is the `Thread` the server sends with
    its first message (as it was when the watch opened), `None` until then. A call that breaks
    is resumed after the last part seen, as for `RunStream`; see `EventStream`. Stop with
    `aclose()` or `async with`, which cancels the call.
    """

    _ended_early = "the thread's watch ended"

    def __init__(
        self,
        open_messages: Callable[[int], AsyncGenerator[WatchMessage, None]],
        *,
        after_seq: int = 0,
    ) -> None:
        """`open_messages(after_seq)` starts a call."""
        super().__init__(after_seq)
        self._open_messages = open_messages
        self.thread: Thread | None = None

    def _open(self) -> AsyncGenerator[WatchMessage, None]:
        return self._open_messages(self._last_seq)

    def _receive(self, message: WatchMessage) -> None:
        if self.thread is None and message.HasField("thread"):
            self.thread = thread_to_dict(message.thread)
        for event in message.events:
            if event.seq <= self._last_seq:
                continue
            self._last_seq = event.seq
            part = thread_event_part(event)
            if part is not None:
                self._pending.append(part)
