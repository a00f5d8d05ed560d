"""The event hub (`turnstile_server.events.EventHub`), without a server: run logs numbered by
attempt, error and end once, retention and budgets; thread logs numbered by epoch, seeded,
expired when idle, ended with their thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.event_logs import (
    Subscriber,
    kinds,
    run_events,
    run_record,
    thread_events,
    thread_seqs,
)
from tests.support import eventually
from turnstile_server.api import wire
from turnstile_server.api.event_frames import EventFrames
from turnstile_server.event_log import StreamLimits, check_position
from turnstile_server.events import SEQ_EPOCH_BITS, EventHub

WHAT = {"run_id": "r"}
EPOCH = 1 << SEQ_EPOCH_BITS
STEP = 5.0  # seconds a subscriber may take to react, so that a hang fails fast


@pytest.fixture
async def hub() -> AsyncIterator[EventHub]:
    events = EventHub(EventFrames(), StreamLimits())
    yield events
    events.close()


# EventHub: run logs.


async def test_attempt_n_numbers_its_events_from_n_minus_one_times_two_to_the_32(
    hub: EventHub,
) -> None:
    for attempt in (1, 2, 3):
        run = run_record(f"r{attempt}", attempt=attempt)
        hub.run_started(run)
        hub.emit(run, "metadata", {"attempt": attempt})
        hub.run_ended(replace(run, status="success"), {"status": "success"})
        log = hub.get(run.run_id)
        assert log is not None
        base = (attempt - 1) * EPOCH
        assert [(s, e) for s, e, _ in run_events(log)] == [
            (base + 1, "metadata"),
            (base + 2, "end"),
        ]


async def test_a_run_that_never_started_numbers_its_end_after_its_last_attempt(
    hub: EventHub,
) -> None:
    queued = run_record("queued", attempt=0, status="interrupted")
    requeued = run_record("requeued", attempt=2, status="interrupted")
    hub.open(queued.run_id)
    for run in (queued, requeued):
        hub.run_ended(run, {"status": "interrupted"})

    queued_log, requeued_log = hub.get("queued"), hub.get("requeued")
    assert queued_log is not None and requeued_log is not None
    assert [s for s, _, _ in run_events(queued_log)] == [1]
    assert [s for s, _, _ in run_events(requeued_log)] == [2 * EPOCH + 1]


async def test_run_ended_emits_error_then_end_once_and_ends_the_log(hub: EventHub) -> None:
    run = run_record()
    hub.run_started(run)
    hub.emit(run, "metadata", {})
    failed = replace(run, status="error")
    hub.run_ended(failed, {"status": "error"}, error={"type": "E", "message": "boom"})
    hub.run_ended(failed, {"status": "error"}, error={"type": "E", "message": "boom"})

    log = hub.get(run.run_id)
    assert log is not None and log.ended
    assert run_events(log) == [
        (1, "metadata", {}),
        (2, "error", {"type": "E", "message": "boom"}),
        (3, "end", {"status": "error"}),
    ]


async def test_emit_refuses_data_that_is_not_json(hub: EventHub) -> None:
    run = run_record()
    hub.run_started(run)
    with pytest.raises((TypeError, ValueError)):
        hub.emit(run, "custom", {"x": object()})
    with pytest.raises(ValueError):
        hub.emit(run, "custom", float("nan"))


async def test_an_ended_run_log_is_dropped_after_retain_seconds() -> None:
    hub = EventHub(EventFrames(), StreamLimits(retain_seconds=0.05))
    try:
        run = run_record()
        hub.run_started(run)
        hub.emit(run, "metadata", {})
        hub.run_ended(replace(run, status="success"), {"status": "success"})
        log = hub.get(run.run_id)
        assert log is not None and not log.expired

        async def dropped() -> None:
            assert hub.get(run.run_id) is None

        await eventually(dropped, within=STEP)
        assert log.expired
    finally:
        hub.close()


async def test_ended_run_logs_over_the_retained_bytes_budget_drop_the_oldest() -> None:
    def end(hub: EventHub, run_id: str) -> int:
        run = run_record(run_id)
        hub.run_started(run)
        hub.run_ended(replace(run, status="success"), {"status": "success"})
        log = hub.get(run_id)
        assert log is not None
        return log.nbytes

    probe = EventHub(EventFrames(), StreamLimits())
    try:
        size = end(probe, "probe")  # what one ended run's log counts as
    finally:
        probe.close()
    hub = EventHub(EventFrames(), StreamLimits(retained_bytes=int(2.5 * size)))
    try:
        for index in range(4):
            end(hub, f"r{index}")

        assert [hub.get(f"r{index}") is not None for index in range(4)] == [
            False,
            False,
            True,
            True,
        ]
    finally:
        hub.close()


async def test_replaying_ended_runs_keeps_their_encoded_bytes_within_the_retained_budget() -> None:
    # `checked` events are lazy: they count as a small estimate until a replay encodes them.
    payload = {"text": "x" * 2000}
    hub = EventHub(EventFrames(), StreamLimits(retained_bytes=5000))
    try:
        for index in range(4):
            run = run_record(f"r{index}")
            hub.run_started(run)
            hub.emit(run, "values", payload, checked=True)
            hub.run_ended(replace(run, status="success"), {"status": "success"})
        assert all(hub.get(f"r{index}") is not None for index in range(4)), "estimates fit"

        for index in range(4):
            log = hub.get(f"r{index}")
            if log is not None:
                run_events(log)  # a replay: encodes every event

        retained = [hub.get(f"r{index}") for index in range(4)]
        assert sum(log.nbytes for log in retained if log is not None) <= 5000
        assert retained[3] is not None, "the newest stays; the oldest went first"
        assert retained[0] is None and retained[1] is None
    finally:
        hub.close()


async def test_a_subscriber_of_a_started_run_that_ends_without_events_gets_its_end(
    hub: EventHub,
) -> None:
    # A run started (attempt 1) and cancelled before its graph ran emits only `end`: the
    # scheduler's `_drive` skips `execute` when the run is already being cancelled.
    run = run_record(attempt=1)
    log = hub.open(run.run_id)
    hub.run_started(run)
    check_position(log, 0, what=WHAT)
    subscriber = Subscriber(log, 0, hub.limits)
    await subscriber.idle()
    hub.run_ended(replace(run, status="interrupted"), {"status": "interrupted"})

    assert await subscriber.result() == [1], "attempt 1 numbers its events from 1"
    assert [s for s, _, _ in run_events(log)] == [1]


async def test_a_subscriber_waiting_on_a_requeued_run_gets_its_events_when_it_starts(
    hub: EventHub,
) -> None:
    # After a restart a run left running is pending again; JoinRunStream(after_seq=0) may wait
    # on its unnumbered log until it starts as attempt 2.
    run = run_record(attempt=2)
    log = hub.open(run.run_id)
    subscriber = Subscriber(log, 0, hub.limits)
    await subscriber.idle()
    hub.run_started(run)
    hub.emit(run, "metadata", {})
    hub.run_ended(replace(run, status="success"), {"status": "success"})

    assert await subscriber.result() == [EPOCH + 1, EPOCH + 2]


# EventHub: thread logs.


async def test_a_thread_log_is_numbered_from_its_epoch_and_records_run_lifecycles() -> None:
    epochs = iter([3, 4])

    async def epoch(thread_id: str) -> int:
        return next(epochs)

    hub = EventHub(EventFrames(), StreamLimits(), thread_epoch=epoch)
    try:
        log = await hub.thread_log("t")
        assert (log.first_seq, log.last_seq) == (3 * EPOCH + 1, 3 * EPOCH)
        run = run_record(thread_id="t")
        hub.run_started(run)
        hub.emit(run, "metadata", {})
        hub.run_ended(replace(run, status="success"), {"status": "success"})

        events = thread_events(log.read(log.first_seq - 1, 100, 1 << 20))
        assert [e.seq for e in events] == [3 * EPOCH + n for n in range(1, 5)]
        assert kinds(events) == ["run_started", "run_event:metadata", "run_event:end", "run_ended"]
        assert [e.run_event.seq for e in events[1:3]] == [1, 2]
        assert events[0].run_started.run_id == run.run_id
        assert events[3].run_ended.status == wire.RUN_STATUS_ENUM["success"]
        assert await hub.thread_log("t") is log
    finally:
        hub.close()


async def test_a_new_thread_log_is_seeded_with_the_running_run_and_its_events(
    hub: EventHub,
) -> None:
    run = run_record(thread_id="t")
    hub.run_started(run)
    hub.emit(run, "metadata", {})
    hub.emit(run, "custom", {"n": 1})
    log = await hub.thread_log("t")
    hub.emit(run, "custom", {"n": 2})

    events = thread_events(log.read(log.first_seq - 1, 100, 1 << 20))
    assert kinds(events) == [
        "run_started",
        "run_event:metadata",
        "run_event:custom",
        "run_event:custom",
    ]
    assert [e.run_event.seq for e in events[1:]] == [1, 2, 3]
    assert [e.seq for e in events] == [1, 2, 3, 4]


async def test_an_idle_thread_log_expires_after_retain_seconds_but_not_while_watched() -> None:
    epochs = iter(range(1, 10))

    async def epoch(thread_id: str) -> int:
        return next(epochs)

    hub = EventHub(EventFrames(), StreamLimits(retain_seconds=0.05), thread_epoch=epoch)
    try:
        async with hub.watching("t") as watched:
            run = run_record(thread_id="t")
            hub.run_started(run)
            hub.run_ended(replace(run, status="success"), {"status": "success"})
            await asyncio.sleep(0.15)  # three retention periods, with a watcher
            assert not watched.expired
        running = run_record("r2", thread_id="t")
        hub.run_started(running)
        await asyncio.sleep(0.15)  # with a running run and no watcher
        assert not watched.expired
        hub.run_ended(replace(running, status="success"), {"status": "success"})

        async def expired() -> None:
            assert watched.expired

        await eventually(expired, within=STEP)
        fresh = await hub.thread_log("t")
        assert fresh is not watched
        assert fresh.first_seq == 2 * EPOCH + 1, "a new log takes a new epoch"
    finally:
        hub.close()


async def test_deleting_a_thread_ends_its_log_and_its_watchers_stop(hub: EventHub) -> None:
    log = await hub.thread_log("t")
    subscriber = Subscriber(log, 0, hub.limits, thread_seqs)
    await subscriber.idle()
    run = run_record(thread_id="t")
    hub.run_started(run)
    hub.thread_deleted("t")

    assert await subscriber.result() == [1]
    assert log.ended and not log.expired
