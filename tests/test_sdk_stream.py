"""The SDK's streams against scripted calls: dedupe by seq, reconnects, backoff, encoding."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, cast

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import pytest
from google.protobuf import any_pb2, struct_pb2
from google.protobuf.message import Message
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    error_details_pb2,
    status_pb2,
)

import turnstile
from turnstile import _stream
from turnstile._client import TurnstileClient
from turnstile._errors import STATUS_DETAILS_KEY
from turnstile._runs import RunsClient
from turnstile._sync import SyncTurnstileClient
from turnstile._threads import ThreadsClient
from turnstile._transport import Stubs, Transport
from turnstile.v1 import run_pb2, run_service_pb2, thread_pb2, thread_service_pb2

THREAD = "t1"
RUN = "r1"

Script = Sequence[Message | BaseException]
"""What one call delivers: messages in order, an exception to fail, or the end to complete."""


# --- scripted calls --------------------------------------------------------------------------


def rpc_error(code: grpc.StatusCode, reason: str = "") -> grpc.aio.AioRpcError:
    """The error a failed call raises, with a `google.rpc.Status` trailer naming `reason`."""
    details = []
    if reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="turnstile.v1"))
        details.append(packed)
    status = status_pb2.Status(code=code.value[0], message=reason.lower(), details=details)
    trailers = grpc.aio.Metadata((STATUS_DETAILS_KEY, status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, reason.lower())


def unavailable() -> grpc.aio.AioRpcError:
    return rpc_error(grpc.StatusCode.UNAVAILABLE)


class FakeCall:
    """A server-streaming call that plays a script."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._play()

    async def _play(self) -> AsyncIterator[Message]:
        for item in self._script:
            await asyncio.sleep(0)
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeMethod:
    """A stub method answering each call with the next script; records requests and calls."""

    def __init__(self, *scripts: Script) -> None:
        self._scripts = deque(scripts)
        self.requests: list[Any] = []
        self.calls: list[FakeCall] = []

    def __call__(self, request: Message, *, timeout: float | None, metadata: Any) -> FakeCall:
        self.requests.append(request)
        assert self._scripts, f"unexpected call #{len(self.requests)}: {request}"
        call = FakeCall(self._scripts.popleft())
        self.calls.append(call)
        return call


class FakeTransport(Transport):
    """A `Transport` whose stubs are scripted methods instead of a channel."""

    def __init__(self) -> None:
        super().__init__("fake:0", api_key=None, timeout=None)
        self.stream_run = FakeMethod()
        self.join_run_stream = FakeMethod()
        self.watch_thread = FakeMethod()

    def stubs(self) -> Stubs:
        return Stubs(
            assistants=cast(Any, None),
            threads=cast(Any, _Namespace(WatchThread=self.watch_thread)),
            runs=cast(
                Any, _Namespace(StreamRun=self.stream_run, JoinRunStream=self.join_run_stream)
            ),
        )


class _Namespace:
    def __init__(self, **methods: FakeMethod) -> None:
        self.__dict__.update(methods)


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def runs(transport: FakeTransport) -> RunsClient:
    return RunsClient(transport)


@pytest.fixture
def threads(transport: FakeTransport) -> ThreadsClient:
    return ThreadsClient(transport)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Records the stream's backoff pauses instead of waiting them out."""
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(_stream, "_sleep", sleep)
    yield pauses


# --- messages ---------------------------------------------------------------------------------


def run_events(events: Sequence[tuple[int, str]]) -> list[run_pb2.RunEvent]:
    """RunEvents of kind and seq as given; each one's data is its seq."""
    return [
        run_pb2.RunEvent(seq=seq, run_id=RUN, event=kind, data=struct_pb2.Value(number_value=seq))
        for seq, kind in events
    ]


def the_run() -> run_pb2.Run:
    return run_pb2.Run(run_id=RUN, thread_id=THREAD, status=run_pb2.RUN_STATUS_RUNNING)


def run_message(
    *, run: bool = False, events: Sequence[tuple[int, str]] = ()
) -> run_service_pb2.StreamRunResponse:
    """A StreamRun message; the first one of a call carries the run (`run`)."""
    return run_service_pb2.StreamRunResponse(
        events=run_events(events), run=the_run() if run else None
    )


def join_message(
    *, run: bool = False, events: Sequence[tuple[int, str]] = ()
) -> run_service_pb2.JoinRunStreamResponse:
    """A JoinRunStream message; the first one of a call carries the run (`run`)."""
    return run_service_pb2.JoinRunStreamResponse(
        events=run_events(events), run=the_run() if run else None
    )


def values(*seqs: int) -> list[tuple[int, str]]:
    return [(seq, "values") for seq in seqs]


async def collect(stream: AsyncIterator[turnstile.StreamPart]) -> list[turnstile.StreamPart]:
    return [part async for part in stream]


# --- runs.stream ------------------------------------------------------------------------------


async def test_unavailable_mid_stream_resumes_by_joining_after_the_last_seq(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod(
        [run_message(run=True, events=values(1, 2)), run_message(events=values(3)), unavailable()]
    )
    transport.join_run_stream = FakeMethod(
        [join_message(run=True, events=values(4)), join_message(events=[(5, "end")])]
    )

    stream = runs.stream(THREAD, "agent")
    parts = await collect(stream)

    assert [(p.seq, p.event) for p in parts] == [*values(1, 2, 3, 4), (5, "end")]
    assert [p.data for p in parts] == [1.0, 2.0, 3.0, 4.0, 5.0]
    (join,) = transport.join_run_stream.requests
    assert (join.thread_id, join.run_id, join.after_seq) == (THREAD, RUN, 3)
    assert sleeps == [0.1]
    assert stream.run is not None and stream.run["run_id"] == RUN


async def test_replayed_events_are_skipped_and_seq_jumps_are_not_gaps(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    # 2 -> 5 is a coalesced jump; the reconnect replays 4 and 5, which were already seen.
    transport.stream_run = FakeMethod(
        [run_message(run=True, events=values(1, 2, 5)), unavailable()]
    )
    transport.join_run_stream = FakeMethod(
        [join_message(run=True, events=values(4, 5, 6)), join_message(events=[(7, "end")])]
    )

    parts = await collect(runs.stream(THREAD, "agent"))

    assert [p.seq for p in parts] == [1, 2, 5, 6, 7]
    assert transport.join_run_stream.requests[0].after_seq == 5


async def test_a_stream_that_completes_without_end_is_resumed_with_backoff(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod([run_message(run=True, events=values(1, 2))])
    transport.join_run_stream = FakeMethod([join_message(run=True, events=[(3, "end")])])

    parts = await collect(runs.stream(THREAD, "agent"))

    assert [p.seq for p in parts] == [1, 2, 3]
    assert transport.join_run_stream.requests[0].after_seq == 2
    assert sleeps == [0.1]


async def test_subscriber_too_slow_resumes_at_once_without_sleeping(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    too_slow = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW")
    transport.stream_run = FakeMethod([run_message(run=True, events=values(1, 2, 3)), too_slow])
    transport.join_run_stream = FakeMethod([join_message(run=True, events=[(4, "end")])])

    parts = await collect(runs.stream(THREAD, "agent"))

    assert [p.seq for p in parts] == [1, 2, 3, 4]
    assert transport.join_run_stream.requests[0].after_seq == 3
    assert sleeps == []


async def test_stream_expired_is_raised_without_another_reconnect(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod([run_message(run=True, events=values(1)), unavailable()])
    transport.join_run_stream = FakeMethod(
        [rpc_error(grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")]
    )

    seen: list[int] = []
    with pytest.raises(turnstile.OutOfRangeError) as expired:
        async for part in runs.stream(THREAD, "agent"):
            seen.append(part.seq)

    assert expired.value.reason == "STREAM_EXPIRED"
    assert seen == [1]
    assert len(transport.join_run_stream.requests) == 1
    assert sleeps == [0.1]


@pytest.mark.parametrize(
    ("code", "reason", "error_type"),
    [
        (grpc.StatusCode.NOT_FOUND, "THREAD_NOT_FOUND", turnstile.NotFoundError),
        (grpc.StatusCode.INVALID_ARGUMENT, "", turnstile.InvalidArgumentError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", turnstile.DeadlineExceededError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL", turnstile.ResourceExhaustedError),
        (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED", turnstile.OutOfRangeError),
    ],
)
async def test_other_errors_are_raised_as_they_are(
    transport: FakeTransport,
    runs: RunsClient,
    sleeps: list[float],
    code: grpc.StatusCode,
    reason: str,
    error_type: type[turnstile.TurnstileError],
) -> None:
    transport.stream_run = FakeMethod([rpc_error(code, reason)])

    with pytest.raises(error_type) as raised:
        await collect(runs.stream(THREAD, "agent"))

    assert raised.value.reason == reason
    assert len(transport.stream_run.requests) == 1
    assert transport.join_run_stream.requests == []
    assert sleeps == []


async def test_backoff_doubles_and_the_stream_gives_up_after_five_failed_reconnects(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod([run_message(run=True, events=values(1)), unavailable()])
    transport.join_run_stream = FakeMethod(*([unavailable()] for _ in range(5)))

    seen: list[int] = []
    with pytest.raises(turnstile.UnavailableError):
        async for part in runs.stream(THREAD, "agent"):
            seen.append(part.seq)

    assert seen == [1]
    assert len(transport.join_run_stream.requests) == _stream.RECONNECT_ATTEMPTS == 5
    assert sleeps == [0.1, 0.2, 0.4, 0.8, 1.6]


async def test_a_stream_that_keeps_ending_without_end_gives_up_with_unavailable(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod([run_message(run=True, events=values(1))])
    transport.join_run_stream = FakeMethod(*([] for _ in range(5)))

    with pytest.raises(turnstile.UnavailableError, match="before its end event"):
        await collect(runs.stream(THREAD, "agent"))

    assert len(transport.join_run_stream.requests) == 5
    assert sleeps == [0.1, 0.2, 0.4, 0.8, 1.6]


def test_the_pause_doubles_from_a_tenth_of_a_second_up_to_two_seconds() -> None:
    delays = [_stream.reconnect_delay(n) for n in range(1, 9)]

    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]


async def test_the_failure_count_restarts_when_a_reconnect_delivers_a_message(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod([run_message(run=True, events=values(1)), unavailable()])
    transport.join_run_stream = FakeMethod(
        [unavailable()],
        [unavailable()],
        [unavailable()],
        [unavailable()],
        [join_message(run=True, events=values(2)), unavailable()],
        [unavailable()],
        [unavailable()],
        [unavailable()],
        [unavailable()],
        [join_message(run=True, events=[(3, "end")])],
    )

    parts = await collect(runs.stream(THREAD, "agent"))

    assert [p.seq for p in parts] == [1, 2, 3]
    assert sleeps == [0.1, 0.2, 0.4, 0.8, 1.6] * 2
    assert [r.after_seq for r in transport.join_run_stream.requests] == [1] * 5 + [2] * 5


async def test_a_failure_before_the_first_message_resends_stream_run_with_the_same_request_id(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod(
        [unavailable()], [run_message(run=True, events=[*values(1), (2, "end")])]
    )

    parts = await collect(runs.stream(THREAD, "agent", input={"x": 1}))

    assert [p.seq for p in parts] == [1, 2]
    first, second = transport.stream_run.requests
    assert first.request_id != ""
    assert second == first
    assert transport.join_run_stream.requests == []
    assert sleeps == [0.1]


async def test_a_caller_request_id_is_sent_on_every_stream_run_attempt(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod([unavailable()], [run_message(run=True, events=[(1, "end")])])

    await collect(runs.stream(THREAD, "agent", request_id="req-1"))

    assert [r.request_id for r in transport.stream_run.requests] == ["req-1", "req-1"]


async def test_two_streams_without_request_id_get_different_ones(
    transport: FakeTransport, runs: RunsClient
) -> None:
    transport.stream_run = FakeMethod(
        [run_message(run=True, events=[(1, "end")])], [run_message(run=True, events=[(1, "end")])]
    )

    await collect(runs.stream(THREAD, "agent"))
    await collect(runs.stream(THREAD, "agent"))

    first, second = (r.request_id for r in transport.stream_run.requests)
    assert first and second and first != second


async def test_the_end_event_finishes_the_stream_and_a_later_break_is_not_resumed(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.stream_run = FakeMethod(
        [run_message(run=True, events=[*values(1), (2, "end"), (3, "values")]), unavailable()]
    )

    parts = await collect(runs.stream(THREAD, "agent"))

    assert [(p.event, p.seq) for p in parts] == [("values", 1), ("end", 2)]
    assert transport.join_run_stream.requests == []
    assert sleeps == []
    assert transport.stream_run.calls[0].cancelled


async def test_closing_a_stream_early_cancels_its_call(
    transport: FakeTransport, runs: RunsClient
) -> None:
    transport.stream_run = FakeMethod([run_message(run=True, events=values(1, 2, 3))])

    async with runs.stream(THREAD, "agent") as stream:
        first = await anext(stream)

    assert first.seq == 1
    assert transport.stream_run.calls[0].cancelled
    assert await collect(stream) == []


# --- runs.join_stream -------------------------------------------------------------------------


async def test_join_stream_starts_after_the_callers_seq_and_resumes_after_the_last_one(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    transport.join_run_stream = FakeMethod(
        [join_message(run=True, events=values(4, 5, 6)), unavailable()],
        [join_message(run=True, events=[(7, "end")])],
    )

    parts = await collect(runs.join_stream(THREAD, RUN, after_seq=4))

    assert [p.seq for p in parts] == [5, 6, 7]
    assert [r.after_seq for r in transport.join_run_stream.requests] == [4, 6]
    assert {(r.thread_id, r.run_id) for r in transport.join_run_stream.requests} == {(THREAD, RUN)}


# --- on_disconnect ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_disconnect", "encoded"),
    [
        (None, run_pb2.ON_DISCONNECT_UNSPECIFIED),
        ("continue", run_pb2.ON_DISCONNECT_CONTINUE),
        ("cancel", run_pb2.ON_DISCONNECT_CANCEL),
    ],
)
async def test_on_disconnect_is_sent_as_the_proto_enum(
    transport: FakeTransport,
    runs: RunsClient,
    on_disconnect: turnstile.OnDisconnect | None,
    encoded: int,
) -> None:
    transport.stream_run = FakeMethod([run_message(run=True, events=[(1, "end")])])

    await collect(runs.stream(THREAD, "agent", on_disconnect=on_disconnect))

    assert transport.stream_run.requests[0].on_disconnect == encoded


def test_an_unknown_on_disconnect_raises_before_any_call(
    transport: FakeTransport, runs: RunsClient
) -> None:
    with pytest.raises(ValueError, match="on_disconnect 'detach'"):
        runs.stream(THREAD, "agent", on_disconnect="detach")  # type: ignore[arg-type]

    assert transport.stream_run.requests == []


# --- threads.watch ----------------------------------------------------------------------------


def watch_message(
    *events: thread_service_pb2.ThreadEvent, thread: bool = False
) -> thread_service_pb2.WatchThreadResponse:
    """A WatchThread message; the first one of a call carries the thread (`thread`)."""
    busy = thread_pb2.Thread(thread_id=THREAD, status=thread_pb2.THREAD_STATUS_BUSY)
    return thread_service_pb2.WatchThreadResponse(events=events, thread=busy if thread else None)


def started(seq: int) -> thread_service_pb2.ThreadEvent:
    run = run_pb2.Run(run_id=RUN, thread_id=THREAD, status=run_pb2.RUN_STATUS_RUNNING)
    return thread_service_pb2.ThreadEvent(seq=seq, run_started=run)


def ended(seq: int) -> thread_service_pb2.ThreadEvent:
    run = run_pb2.Run(run_id=RUN, thread_id=THREAD, status=run_pb2.RUN_STATUS_SUCCESS)
    return thread_service_pb2.ThreadEvent(seq=seq, run_ended=run)


def run_event(seq: int, run_seq: int, kind: str = "values") -> thread_service_pb2.ThreadEvent:
    event = run_pb2.RunEvent(
        seq=run_seq, run_id=RUN, event=kind, data=struct_pb2.Value(number_value=run_seq)
    )
    return thread_service_pb2.ThreadEvent(seq=seq, run_event=event)


async def take(stream: AsyncIterator[Any], count: int) -> list[Any]:
    return [await anext(stream) for _ in range(count)]


async def test_watch_yields_run_lifecycle_and_run_events_and_resumes_after_the_thread_seq(
    transport: FakeTransport, threads: ThreadsClient, sleeps: list[float]
) -> None:
    transport.watch_thread = FakeMethod(
        [watch_message(started(1), run_event(2, 1), thread=True), unavailable()],
        [watch_message(run_event(2, 1), run_event(3, 2, "end"), ended(4), thread=True)],
    )

    async with threads.watch(THREAD) as watch:
        parts = await take(watch, 4)

    assert [(p.event, p.seq, p.run_id, p.run_seq) for p in parts] == [
        ("run_started", 1, RUN, 0),
        ("values", 2, RUN, 1),
        ("end", 3, RUN, 2),
        ("run_ended", 4, RUN, 0),
    ]
    assert parts[0].data["status"] == "running"
    assert parts[1].data == 1.0
    assert parts[3].data["status"] == "success"
    assert [r.after_seq for r in transport.watch_thread.requests] == [0, 2]
    assert sleeps == [0.1]
    assert watch.thread is not None
    assert (watch.thread["thread_id"], watch.thread["status"]) == (THREAD, "busy")
    assert transport.watch_thread.calls[1].cancelled


async def test_watch_does_not_end_when_a_run_ends_and_reconnects_when_the_call_completes(
    transport: FakeTransport, threads: ThreadsClient, sleeps: list[float]
) -> None:
    transport.watch_thread = FakeMethod(
        [watch_message(run_event(6, 9, "end"), ended(7), thread=True)],
        [watch_message(started(8), thread=True)],
    )

    async with threads.watch(THREAD, after_seq=5) as watch:
        parts = await take(watch, 3)

    assert [p.seq for p in parts] == [6, 7, 8]
    assert [r.after_seq for r in transport.watch_thread.requests] == [5, 7]
    assert all(r.thread_id == THREAD for r in transport.watch_thread.requests)
    assert sleeps == [0.1]


async def test_watch_resumes_at_once_when_too_slow_and_raises_when_expired(
    transport: FakeTransport, threads: ThreadsClient, sleeps: list[float]
) -> None:
    transport.watch_thread = FakeMethod(
        [
            watch_message(started(1), thread=True),
            rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW"),
        ],
        [rpc_error(grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")],
    )

    watch = threads.watch(THREAD)
    assert (await anext(watch)).seq == 1
    with pytest.raises(turnstile.OutOfRangeError):
        await anext(watch)

    assert [r.after_seq for r in transport.watch_thread.requests] == [0, 1]
    assert sleeps == []
    with pytest.raises(StopAsyncIteration):
        await anext(watch)


def test_watch_refuses_a_negative_after_seq(threads: ThreadsClient) -> None:
    with pytest.raises(ValueError, match="after_seq"):
        threads.watch(THREAD, after_seq=-1)


async def test_the_sync_watch_yields_the_same_parts(transport: FakeTransport) -> None:
    transport.watch_thread = FakeMethod([watch_message(started(1), run_event(2, 1), thread=True)])

    def script() -> tuple[list[turnstile.ThreadStreamPart], turnstile.Thread | None]:
        with (
            SyncTurnstileClient(TurnstileClient(transport)) as sync,
            sync.threads.watch(THREAD) as watch,
        ):
            parts = [next(watch), next(watch)]
            return parts, watch.thread

    parts, thread = await asyncio.to_thread(script)

    assert [(p.event, p.seq) for p in parts] == [("run_started", 1), ("values", 2)]
    assert thread is not None and thread["thread_id"] == THREAD
    assert transport.watch_thread.calls[0].cancelled
