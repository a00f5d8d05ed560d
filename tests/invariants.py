"""What must hold of a thread whatever went wrong on the way, checked through the API, the
thread's watch stream and the database file (SPEC §3)."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.rpc import Stubs, error_info, human_input
from tests.support import eventually
from turnstile.v1 import run_pb2, run_service_pb2, thread_pb2, thread_service_pb2
from turnstile_server.state import ThreadState

CALL_TIMEOUT = 10.0
SETTLE_WITHIN = 10.0
INFLIGHT = (run_pb2.RUN_STATUS_PENDING, run_pb2.RUN_STATUS_RUNNING)


@dataclass
class Watch:
    """Every `run_started` and `run_ended` of one thread, from a WatchThread call."""

    started: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    async def follow(self, stubs: Stubs, thread_id: str, opened: asyncio.Event) -> None:
        call = stubs.threads.WatchThread(thread_service_pb2.WatchThreadRequest(thread_id=thread_id))
        async for message in call:
            opened.set()
            for event in message.events:
                kind = event.WhichOneof("kind")
                if kind == "run_started":
                    self.started.append(event.run_started.run_id)
                elif kind == "run_ended":
                    self.ended.append(event.run_ended.run_id)


@asynccontextmanager
async def watching(stubs: Stubs, thread_ids: list[str]) -> AsyncIterator[dict[str, Watch]]:
    """Watches the threads for the block (each watch open before the block starts)."""
    watches = {tid: Watch() for tid in thread_ids}
    tasks = []
    try:
        for tid, watch in watches.items():
            opened = asyncio.Event()
            tasks.append(asyncio.create_task(watch.follow(stubs, tid, opened)))
            async with asyncio.timeout(CALL_TIMEOUT):
                await opened.wait()
        yield watches
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results


@dataclass
class RunningPoll:
    """What polling the database file for a thread with two RUNNING runs found."""

    polls: int = 0
    violations: list[tuple[str, int]] = field(default_factory=list)


@asynccontextmanager
async def polling_running(database: str) -> AsyncIterator[RunningPoll]:
    """Polls the file every few milliseconds during the block, from a connection of its own."""
    poll = RunningPoll()
    conn = sqlite3.connect(database, check_same_thread=False, isolation_level=None)

    def once() -> None:
        rows = conn.execute(
            "SELECT thread_id, COUNT(*) FROM runs WHERE status = 'running'"
            " GROUP BY thread_id HAVING COUNT(*) > 1"
        ).fetchall()
        poll.violations.extend(rows)
        poll.polls += 1

    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await asyncio.to_thread(once)
            await asyncio.sleep(0.005)

    with closing(conn):
        task = asyncio.create_task(loop())
        try:
            yield poll
        finally:
            # Not cancelled: cancelling left the poll running in its thread while the
            # connection closed under it (a segmentation fault in the suite).
            stop.set()
            await task


def checkpoints_in_file(database: str, thread_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The thread's checkpoints as stored: (run id, update), oldest first."""
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(
            "SELECT run_id, update_json FROM checkpoints WHERE thread_id = ? ORDER BY seq",
            (thread_id,),
        ).fetchall()
    return [(run_id, json.loads(update)) for run_id, update in rows]


def run_times_in_file(database: str, thread_id: str) -> list[tuple[int | None, int | None]]:
    """The thread's runs' (start time, end time) as stored, in admission order."""
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute(
            "SELECT start_time, end_time FROM runs WHERE thread_id = ? ORDER BY seq",
            (thread_id,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


async def settled_runs(stubs: Stubs, thread_id: str) -> list[run_pb2.Run]:
    """Waits until the thread has no inflight run and is not BUSY; returns its runs."""

    async def no_inflight() -> list[run_pb2.Run]:
        runs = await stubs.runs.ListRuns(
            run_service_pb2.ListRunsRequest(thread_id=thread_id, page_size=1000),
            timeout=CALL_TIMEOUT,
        )
        stuck = [
            (r.run_id, run_pb2.RunStatus.Name(r.status)) for r in runs.runs if r.status in INFLIGHT
        ]
        assert not stuck, f"thread {thread_id} still has inflight runs {stuck}"
        thread = await stubs.threads.GetThread(
            thread_service_pb2.GetThreadRequest(thread_id=thread_id), timeout=CALL_TIMEOUT
        )
        assert thread.thread.status != thread_pb2.THREAD_STATUS_BUSY, "BUSY with nothing inflight"
        return list(runs.runs)

    return await eventually(no_inflight, within=SETTLE_WITHIN)


async def assert_thread_invariants(
    stubs: Stubs, database: str, thread_id: str, admitted: list[str], watch: Watch
) -> list[run_pb2.Run]:
    """Checks a thread once its runs have ended (`admitted` in admission order); returns the
    runs that survive (those not rolled back)."""
    runs = await settled_runs(stubs, thread_id)
    surviving = {r.run_id for r in runs}
    assert surviving <= set(admitted), "only admitted runs exist"

    async def every_run_ended_once() -> None:
        assert Counter(watch.ended) == Counter(admitted), "every admitted run ends exactly once"

    await eventually(every_run_ended_once, within=SETTLE_WITHIN)
    assert len(watch.started) == len(set(watch.started)), "no run started twice"
    order = [admitted.index(run_id) for run_id in watch.started]
    assert order == sorted(order), "runs start in admission order"
    executed = [(s, e) for s, e in run_times_in_file(database, thread_id) if s is not None]
    for (_, previous_end), (next_start, _) in itertools.pairwise(executed):
        assert previous_end is not None and previous_end <= next_start, "two runs overlapped"

    for run_id in set(admitted) - surviving:  # rolled back
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.runs.GetRun(
                run_service_pb2.GetRunRequest(thread_id=thread_id, run_id=run_id),
                timeout=CALL_TIMEOUT,
            )
        assert error_info(caught.value).reason == "RUN_NOT_FOUND"
    stored = checkpoints_in_file(database, thread_id)
    assert {run_id for run_id, _ in stored} <= surviving, "no checkpoint of a rolled-back run"
    folded = ThreadState()
    for _, update in stored:
        folded.apply(update)
    state = await stubs.threads.GetThreadState(
        thread_service_pb2.GetThreadStateRequest(thread_id=thread_id), timeout=CALL_TIMEOUT
    )
    assert json_format.MessageToDict(state.checkpoint.values) == folded.snapshot(), (
        "the thread's state is the fold of its checkpoints"
    )
    return runs


async def assert_serving(channel: grpc.aio.Channel, stubs: Stubs, thread_ids: list[str]) -> None:
    """Health says SERVING and a run on each thread goes through."""
    health = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    for tid in thread_ids:
        waited = await stubs.runs.WaitRun(
            run_service_pb2.WaitRunRequest(
                thread_id=tid, assistant_id="echo", input=human_input("still there?")
            ),
            timeout=CALL_TIMEOUT,
        )
        assert waited.run.status == run_pb2.RUN_STATUS_SUCCESS, waited.run
