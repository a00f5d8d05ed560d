"""Run stream retention and positions: expiry, eviction, out-of-range positions, and the
numbering of a run's events across attempts and cancellations."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tests import support
from tests.rpc import ErrorDetails, Stubs, error_info, random_id
from tests.streams import (
    STEP_TIMEOUT,
    RunStream,
    arrived,
    assert_well_formed,
    create_run,
    failure,
    join_run,
    join_stream,
    new_thread,
    read_all,
    serving,
    stream_run,
)
from turnstile.v1 import run_pb2, run_service_pb2

# Retention and positions.


async def test_an_ended_run_stream_is_out_of_range_stream_expired_after_retain_seconds(
    database: str,
) -> None:
    async with serving(database, stream_retain_seconds=0.5) as (_, stubs):
        thread_id = await new_thread(stubs)
        run, events = await read_all(stream_run(stubs, thread_id, "burst", {"chunks": 3}))
        assert_well_formed(events)
        _, replayed = await read_all(join_stream(stubs, run))
        assert replayed == events, "retained for retain_seconds"

        async def expired() -> ErrorDetails:
            call = join_stream(stubs, run)
            try:
                await RunStream(call).opened()
            except grpc.aio.AioRpcError as error:
                return error_info(error)
            finally:
                call.cancel()
            raise AssertionError("still retained")

        error = await support.eventually(expired)
        assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
        assert error.metadata["run_id"] == run.run_id


async def test_after_seq_past_the_end_of_an_ended_run_is_out_of_range(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    run, events = await read_all(stream_run(stubs, thread_id, "burst", {"chunks": 3}))
    last = events[-1][0]

    _, rest = await read_all(join_stream(stubs, run, after_seq=last))
    assert rest == []
    error = await failure(lambda: RunStream(join_stream(stubs, run, last + 1)).opened())
    assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
    assert error.metadata["last_seq"] == str(last)


async def test_negative_after_seq_is_invalid_argument(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    run, _ = await read_all(stream_run(stubs, thread_id, "burst", {"chunks": 1}))

    error = await failure(lambda: RunStream(join_stream(stubs, run, after_seq=-1)).opened())

    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NUMBER")


async def test_join_run_stream_of_an_unknown_run_is_not_found(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    missing = run_pb2.Run(thread_id=thread_id, run_id=random_id())

    error = await failure(lambda: RunStream(join_stream(stubs, missing)).opened())

    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")


async def test_evicted_events_are_out_of_range_and_the_retained_tail_replays_exactly(
    database: str,
) -> None:
    async with serving(database, stream_max_events=50, subscriber_max_lag=10) as (_, stubs):
        thread_id = await new_thread(stubs)
        run = await create_run(
            stubs,
            thread_id,
            "burst",
            {"chunks": 200},
            stream_mode=[run_pb2.STREAM_MODE_MESSAGES],
        )
        assert (await join_run(stubs, run)).status == run_pb2.RUN_STATUS_SUCCESS
        total = 202  # metadata, 200 chunks, end
        first_seq = total - 50 + 1

        error = await failure(lambda: RunStream(join_stream(stubs, run)).opened())
        assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED")
        assert error.metadata["first_seq"] == str(first_seq)
        before = await failure(lambda: RunStream(join_stream(stubs, run, first_seq - 2)).opened())
        assert before.reason == "STREAM_EXPIRED"

        _, tail = await read_all(join_stream(stubs, run, after_seq=first_seq - 1))
        assert [seq for seq, _, _ in tail] == list(range(first_seq, total + 1))
        assert [event for _, event, _ in tail] == ["messages"] * 49 + ["end"]
        assert tail[0][2]["content"] == f"t{first_seq - 2} "


# Numbering across attempts and cancellations.

EPOCH = 1 << 32  # attempt n of a run numbers its events from (n - 1) << 32


async def test_a_join_stream_waiting_on_a_run_requeued_by_a_restart_follows_its_new_attempt(
    database: str,
) -> None:
    async with serving(database) as (_, stubs):
        threads = [await new_thread(stubs), await new_thread(stubs)]
        for thread_id, gate in zip(threads, ["a", "b"], strict=True):
            await create_run(stubs, thread_id, "gated", {"gates": [gate]})
            await arrived(gate)
    # Both were running: the restarted server requeues them, and with one slot only one runs.
    support.GATES.entered.clear()
    async with serving(database, max_running=1) as (_, stubs):

        async def one_running_one_pending() -> run_pb2.Run:
            runs: list[run_pb2.Run] = []
            for thread_id in threads:
                listed = await stubs.runs.ListRuns(
                    run_service_pb2.ListRunsRequest(thread_id=thread_id)
                )
                runs.extend(listed.runs)
            statuses = sorted(r.status for r in runs)
            assert statuses == [run_pb2.RUN_STATUS_PENDING, run_pb2.RUN_STATUS_RUNNING]
            return next(r for r in runs if r.status == run_pb2.RUN_STATUS_PENDING)

        waiting = await support.eventually(one_running_one_pending)
        assert waiting.attempt == 1, "it ran once before the restart"
        joiner = RunStream(join_stream(stubs, waiting))
        assert (await joiner.opened()).status == run_pb2.RUN_STATUS_PENDING
        support.GATES.open("a")
        support.GATES.open("b")

        events = await joiner.to_end()

    assert [seq for seq, _, _ in events] == list(range(EPOCH + 1, EPOCH + 1 + len(events)))
    assert events[0][1] == "metadata" and events[0][2]["attempt"] == 2
    assert events[-1][1] == "end" and events[-1][2]["status"] == "success"


async def test_a_run_superseded_between_its_start_and_its_first_step_streams_end_as_seq_1(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: the run is RUNNING in the store but its task has not executed yet
    when an interrupt arrives (the scheduler then finishes it without running the graph)."""
    async with serving(database) as (app, stubs):
        runs = app.store.runs
        start, finish = runs.start_next, runs.finish
        started, release_start = asyncio.Event(), asyncio.Event()
        finishing, release_finish = asyncio.Event(), asyncio.Event()

        async def held_start(thread_id: str) -> Any:
            record = await start(thread_id)
            if record.run is not None and not started.is_set():
                started.set()
                await release_start.wait()
            return record

        async def held_finish(run: Any, status: str, **kwargs: Any) -> Any:
            if not finishing.is_set():
                finishing.set()
                await release_finish.wait()
            return await finish(run, status, **kwargs)

        monkeypatch.setattr(runs, "start_next", held_start)
        monkeypatch.setattr(runs, "finish", held_finish)
        thread_id = await new_thread(stubs)
        # Due a moment later, so that the scheduler starts it (start_next), not its admission.
        caller = RunStream(stream_run(stubs, thread_id, "echo", {}, after_seconds=0.01))
        run = await caller.opened()
        async with asyncio.timeout(STEP_TIMEOUT):
            await started.wait()
        new_run = await create_run(
            stubs, thread_id, "echo", {}, multitask_strategy=run_pb2.MULTITASK_STRATEGY_INTERRUPT
        )
        release_start.set()
        async with asyncio.timeout(STEP_TIMEOUT):
            await finishing.wait()
        # Started, not yet finished: a joiner now sees the run RUNNING.
        joiner = RunStream(join_stream(stubs, run))
        assert (await joiner.opened()).status == run_pb2.RUN_STATUS_RUNNING
        release_finish.set()

        streams = {}
        for name, stream in (("caller", caller), ("joiner", joiner)):
            try:
                streams[name] = await stream.to_end()
            except grpc.aio.AioRpcError as error:
                details = error_info(error)
                streams[name] = [(0, f"{details.code.name} {details.reason}", details.message)]
        assert (await join_run(stubs, new_run)).status == run_pb2.RUN_STATUS_SUCCESS

    end = {
        "status": "interrupted",
        "reason": f"interrupted by run {new_run.run_id}",
        "action": "interrupt",
        "superseded_by": new_run.run_id,
    }
    assert streams == {"caller": [(1, "end", end)], "joiner": [(1, "end", end)]}
