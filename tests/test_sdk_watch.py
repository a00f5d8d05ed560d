"""The SDK's `threads.watch` against scripted calls: parts, resume after the thread seq."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import pytest
from google.protobuf import struct_pb2

import turnstile
from tests.scripted import (
    RUN,
    THREAD,
    FakeMethod,
    FakeTransport,
    rpc_error,
    unavailable,
)
from turnstile._client import TurnstileClient
from turnstile._sync import SyncTurnstileClient
from turnstile._threads import ThreadsClient
from turnstile.v1 import run_pb2, thread_pb2, thread_service_pb2

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
