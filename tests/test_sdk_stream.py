"""The SDK's run streams against scripted calls: dedupe by seq, reconnects, backoff, encoding."""

from __future__ import annotations

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import pytest

import turnstile
from tests.scripted import (
    RUN,
    THREAD,
    FakeMethod,
    FakeTransport,
    collect,
    join_message,
    rpc_error,
    run_message,
    unavailable,
    values,
)
from turnstile import _stream
from turnstile._runs import RunsClient
from turnstile.v1 import run_pb2

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


async def test_join_stream_after_the_end_of_an_ended_run_is_empty_without_reconnecting(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    # What the server sends for after_seq = the end's seq: the ended run, then nothing.
    transport.join_run_stream = FakeMethod(
        [join_message(run=True, status=run_pb2.RUN_STATUS_SUCCESS)]
    )

    stream = runs.join_stream(THREAD, RUN, after_seq=7)
    parts = await collect(stream)

    assert parts == []
    assert len(transport.join_run_stream.requests) == 1
    assert sleeps == []
    assert stream.run is not None and stream.run["status"] == "success"


async def test_join_stream_at_a_live_runs_last_seq_that_becomes_its_end_ends_on_reconnect(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    # Opened while running at seq 7; the run's `end` turned out to be 7 itself.
    transport.join_run_stream = FakeMethod(
        [join_message(run=True)],
        [join_message(run=True, status=run_pb2.RUN_STATUS_INTERRUPTED)],
    )

    parts = await collect(runs.join_stream(THREAD, RUN, after_seq=7))

    assert parts == []
    assert [r.after_seq for r in transport.join_run_stream.requests] == [7, 7]
    assert sleeps == [0.1]


async def test_calls_that_deliver_only_the_run_and_end_give_up_after_the_attempts(
    transport: FakeTransport, runs: RunsClient, sleeps: list[float]
) -> None:
    # The run message alone is no progress: it must not reset the count (it once did: forever).
    calls = _stream.RECONNECT_ATTEMPTS + 1
    transport.join_run_stream = FakeMethod(*([join_message(run=True)] for _ in range(calls)))

    with pytest.raises(turnstile.UnavailableError):
        await collect(runs.join_stream(THREAD, RUN, after_seq=3))

    assert len(transport.join_run_stream.requests) == calls
    assert sleeps == [_stream.reconnect_delay(n) for n in range(1, calls)]


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
