"""Concurrency guarantees under contention (SPEC §3, guarantees 1 and 2)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tests.lg_graphs import lg_registry
from tests.streams import (
    STEP_TIMEOUT,
    RunStream,
    arrived,
    create_run,
    join_run,
    join_stream,
    new_thread,
    serving,
)
from tests.support import GATES, STEPS, client_of, eventually, registry
from turnstile import ConflictError, MultitaskStrategy, NotFoundError, TurnstileClient
from turnstile.v1 import run_pb2, run_service_pb2
from turnstile_server.errors import RunNotFound

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["native", "langgraph"])
async def either(request: pytest.FixtureRequest, database: str) -> AsyncIterator[TurnstileClient]:
    """A client of a server whose `gated`, `recording` and `echo` graphs are native, or are
    LangGraph graphs (`tests/lg_graphs.py`, whose nodes record entry and exit in the step log)."""
    graphs = registry() if request.param == "native" else lg_registry()
    async with client_of(database, graphs) as (_, sdk):
        yield sdk


async def test_concurrent_reject_creates_on_an_idle_thread_admit_exactly_one(
    client: TurnstileClient,
) -> None:
    for round_ in range(20):
        thread = await client.threads.create()
        tid = thread["thread_id"]
        gate = f"round-{round_}"
        results = await asyncio.gather(
            *(
                client.runs.create(
                    tid, "gated", input={"gates": [gate]}, multitask_strategy="reject"
                )
                for _ in range(50)
            ),
            return_exceptions=True,
        )
        admitted = [r for r in results if isinstance(r, dict)]
        refused = [r for r in results if isinstance(r, ConflictError)]
        assert len(admitted) == 1, f"round {round_}: {len(admitted)} admitted"
        assert len(refused) == 49
        assert all(r.metadata["inflight_run_ids"] == admitted[0]["run_id"] for r in refused)
        assert len(await client.runs.list(tid, limit=100)) == 1, "a refusal writes nothing"
        GATES.open(gate)
        await client.runs.join(tid, admitted[0]["run_id"])


async def test_bursts_of_interrupt_and_rollback_never_overlap_two_runs_of_a_thread(
    either: TurnstileClient,
) -> None:
    client = either
    rng = random.Random(7)
    threads = [(await client.threads.create())["thread_id"] for _ in range(8)]

    async def burst(tid: str) -> list[str]:
        created = []
        for _ in range(12):
            strategy: MultitaskStrategy = rng.choice(
                ["interrupt", "rollback", "interrupt", "rollback", "enqueue"]
            )
            run = await client.runs.create(
                tid,
                "recording",
                input={"steps": 3, "pause": 0.003, "unwind": 0.05},
                multitask_strategy=strategy,
            )
            created.append(run["run_id"])
            await asyncio.sleep(rng.choice([0, 0, 0.001, 0.005]))
        return created

    bursts = await asyncio.gather(*(burst(tid) for tid in threads))
    for tid, created in zip(threads, bursts, strict=True):
        await client.runs.join(tid, created[-1])
        surviving = {r["run_id"]: r for r in await client.runs.list(tid, limit=100)}
        assert all(r["status"] not in ("pending", "running") for r in surviving.values())
        history = await client.threads.get_history(tid, limit=1000)
        written = {c["run_id"] for c in history}
        assert written <= set(surviving), "no checkpoint of a rolled-back run survives"
        for run_id in set(created) - set(surviving):
            with pytest.raises(NotFoundError):
                await client.runs.get(tid, run_id)
    assert STEPS.steps > 0
    assert STEPS.overlaps == [], "two runs of one thread were inside a step at once"


async def test_rollback_restores_the_values_exactly_and_keeps_no_checkpoint_of_the_run(
    either: TurnstileClient,
) -> None:
    client = either
    tid = (await client.threads.create())["thread_id"]
    for word in ("one", "two"):
        await client.runs.wait(tid, "echo", input={"messages": [{"role": "user", "content": word}]})
    before = await client.threads.get_state(tid)
    history_before = await client.threads.get_history(tid, limit=100)

    doomed = await client.runs.create(tid, "gated", input={"gates": ["g1", "g2"], "extra": 1})
    GATES.open("g1")
    await GATES.arrived("g2").wait()
    progressed = await client.threads.get_state(tid)
    assert progressed["run_id"] == doomed["run_id"], "the run had written checkpoints"

    cancelled = await client.runs.cancel(tid, doomed["run_id"], wait=True, action="rollback")
    assert cancelled["status"] == "interrupted"
    after = await client.threads.get_state(tid)
    assert after["values"] == before["values"]
    assert after["checkpoint_id"] == before["checkpoint_id"]
    assert await client.threads.get_history(tid, limit=100) == history_before
    with pytest.raises(NotFoundError):
        await client.runs.get(tid, doomed["run_id"])
    assert (await client.threads.get(tid))["status"] == "idle"


async def test_joining_a_rolled_back_run_between_its_deletion_and_its_settling_returns_it(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: the rollback has deleted the run's row, but the scheduler has not
    yet announced the run's end when JoinRun looks the run up (it finds no row)."""
    async with serving(database) as (app, stubs):
        runs = app.store.runs
        finish, get = runs.finish, runs.get
        finished, release, missed = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def held_finish(run: Any, status: str, **kwargs: Any) -> Any:
            result = await finish(run, status, **kwargs)
            finished.set()
            await release.wait()
            return result

        async def watched_get(thread_id: str, run_id: str) -> Any:
            try:
                return await get(thread_id, run_id)
            except RunNotFound:
                missed.set()
                raise

        monkeypatch.setattr(runs, "finish", held_finish)
        monkeypatch.setattr(runs, "get", watched_get)
        thread_id = await new_thread(stubs)
        run = await create_run(stubs, thread_id, "gated", {"gates": ["held"]})
        await arrived("held")
        await stubs.runs.CancelRun(
            run_service_pb2.CancelRunRequest(
                thread_id=thread_id, run_id=run.run_id, action=run_pb2.CANCEL_ACTION_ROLLBACK
            )
        )
        async with asyncio.timeout(STEP_TIMEOUT):
            await finished.wait()
            joining = asyncio.create_task(join_run(stubs, run))
            await missed.wait()
        release.set()
        joined = await joining
    assert joined.status == run_pb2.RUN_STATUS_INTERRUPTED
    assert joined.cancel_reason == "rolled back by the client"


async def test_runs_enqueued_back_to_back_on_several_threads_all_run_in_order(
    client: TurnstileClient,
) -> None:
    """Each admission while a run is active leaves one "look again" for the thread: the
    scheduler must go on after every queued run, not only after the first of a queue."""

    async def burst(thread_id: str) -> list[str]:
        return [
            (
                await client.runs.create(
                    thread_id,
                    "echo",
                    input={"messages": [{"role": "user", "content": f"m{index}"}]},
                    multitask_strategy="enqueue",
                )
            )["run_id"]
            for index in range(10)
        ]

    thread_ids = [(await client.threads.create())["thread_id"] for _ in range(5)]
    queues = await asyncio.gather(*(burst(tid) for tid in thread_ids))
    async with asyncio.timeout(30):
        for thread_id, run_ids in zip(thread_ids, queues, strict=True):
            for run_id in run_ids:
                await client.runs.join(thread_id, run_id)
            ended = [await client.runs.get(thread_id, run_id) for run_id in run_ids]
            assert all(run["status"] == "success" for run in ended)
            starts = [str(run["start_time"]) for run in ended]
            assert starts == sorted(starts), "started in admission order"
            state = await client.threads.get_state(thread_id)
            humans = [m["content"] for m in state["values"]["messages"] if m["type"] == "human"]
            assert humans == [f"m{index}" for index in range(10)]


async def _running_and_queued(stubs: Any, held: str, never: str) -> tuple[str, Any, Any]:
    """A new thread with a `gated` run waiting at gate `held` and one enqueued behind it
    (gate `never`): the thread's id and both runs."""
    thread_id = await new_thread(stubs)
    first = await create_run(stubs, thread_id, "gated", {"gates": [held]})
    await arrived(held)
    queued = await create_run(
        stubs,
        thread_id,
        "gated",
        {"gates": [never]},
        multitask_strategy=run_pb2.MULTITASK_STRATEGY_ENQUEUE,
    )
    return thread_id, first, queued


async def test_a_queued_run_cancelled_while_the_run_before_it_ends_and_starts_it_is_stopped(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: a run's end is written together with the start of the thread's
    next run; a CancelRun of that next run lands before the scheduler has taken it on (the
    store already says RUNNING). The stop must wait for it, not be dropped."""
    held, never = f"held-{uuid.uuid4()}", f"never-{uuid.uuid4()}"
    async with serving(database) as (app, stubs):
        runs = app.store.runs
        finish = runs.finish
        finished, release = asyncio.Event(), asyncio.Event()
        handed: list[Any] = []

        async def held_finish(run: Any, status: str, **kwargs: Any) -> Any:
            result = await finish(run, status, **kwargs)
            if result is not None and result.next.run is not None:
                handed.append(result.next.run.run_id)
                finished.set()
                await release.wait()
            return result

        monkeypatch.setattr(runs, "finish", held_finish)
        thread_id, first, queued = await _running_and_queued(stubs, held, never)
        GATES.open(held)
        async with asyncio.timeout(STEP_TIMEOUT):
            await finished.wait()
            assert handed == [queued.run_id], "the first run's end started the queued run"
            await stubs.runs.CancelRun(
                run_service_pb2.CancelRunRequest(thread_id=thread_id, run_id=queued.run_id)
            )
            release.set()
            ended = await join_run(stubs, queued)
        assert (await join_run(stubs, first)).status == run_pb2.RUN_STATUS_SUCCESS
    assert ended.status == run_pb2.RUN_STATUS_INTERRUPTED
    assert not GATES.arrived(never).is_set(), "the cancelled run never ran its graph"


async def test_a_run_whose_caller_went_away_after_its_admission_committed_still_runs(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: the admission has committed, with its run started in it, when its
    caller is cancelled (a CreateRun whose deadline passed, a client that disconnected). The
    run must be driven all the same: left alone it would stay RUNNING, its thread busy, until
    a restart (found by the replicas' chaos test, with clients' deadlines of 5 s)."""
    from turnstile_server.store import RunSpec

    runs = app.store.runs
    admit = runs.admit
    committed, release = asyncio.Event(), asyncio.Event()

    async def held_admit(spec: Any, **kwargs: Any) -> Any:
        admission = await admit(spec, **kwargs)
        committed.set()
        await release.wait()
        return admission

    monkeypatch.setattr(runs, "admit", held_admit)
    spec = RunSpec(
        thread_id=str(uuid.uuid4()),
        assistant_id="echo",
        graph_id="echo",
        input={"messages": [{"role": "user", "content": "hi"}]},
        multitask_strategy="enqueue",
        config={},
        metadata={},
        stream_mode=["values"],
        create_thread=True,
    )
    caller = asyncio.create_task(app.scheduler.admit(spec))
    async with asyncio.timeout(STEP_TIMEOUT):
        await committed.wait()
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    [run], _ = await app.store.runs.list(spec.thread_id, status=None, limit=10, before=None)
    async with asyncio.timeout(STEP_TIMEOUT):
        ended = await app.scheduler.wait(spec.thread_id, run.run_id)
    assert ended.status == "success"
    assert (await app.store.threads.get(spec.thread_id)).status == "idle"


async def test_a_heartbeat_that_finds_a_run_ended_by_its_own_finish_leaves_its_successor_run(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: a run's end and the start of the run queued behind it are
    committed in one write, and before that write returns, the replica's heartbeat reads the
    run's row (ended) and reports the run as no longer this replica's (`Scheduler.lost`, as
    `replica.ReplicaLease` calls it). Abandoning the run then cancelled the task awaiting its
    end: the successor, started in the database under this replica's live lease, was never
    driven, its thread held for good (found by the replicas' chaos test)."""
    from turnstile_server.store import RunSpec

    def spec(thread_id: str, graph: str, input: dict[str, Any]) -> RunSpec:
        return RunSpec(
            thread_id=thread_id,
            assistant_id=graph,
            graph_id=graph,
            input=input,
            multitask_strategy="enqueue",
            config={},
            metadata={},
            stream_mode=["values"],
            create_thread=True,
        )

    runs = app.store.runs
    finish = runs.finish
    committed, release = asyncio.Event(), asyncio.Event()

    async def held_finish(run: Any, status: str, **kwargs: Any) -> Any:
        ended = await finish(run, status, **kwargs)
        committed.set()
        await release.wait()
        return ended

    monkeypatch.setattr(runs, "finish", held_finish)
    thread_id = str(uuid.uuid4())
    first = await app.scheduler.admit(spec(thread_id, "gated", {"gates": ["heartbeat"]}))
    async with asyncio.timeout(STEP_TIMEOUT):
        await GATES.arrived("heartbeat").wait()
    queued = await app.scheduler.admit(spec(thread_id, "echo", {"messages": []}))
    GATES.open("heartbeat")
    async with asyncio.timeout(STEP_TIMEOUT):
        await committed.wait()
    app.scheduler.lost([first.run_id])
    release.set()
    async with asyncio.timeout(STEP_TIMEOUT):
        ended = await app.scheduler.wait(thread_id, first.run_id)
        after = await app.scheduler.wait(thread_id, queued.run_id)
    assert (ended.status, after.status) == ("success", "success")


async def test_a_pending_run_cancelled_by_a_call_whose_deadline_passed_still_ends_its_stream(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: a CancelRun of a pending run commits, and its caller's deadline
    passes before the write returns (the server cancels the call). The run ended in the
    store, so its stream must still end with `end` (and its waiters learn of it): the
    cancellation used to skip announcing it, leaving a JoinRunStream waiting for good and,
    with Redis, the run's stream empty (found by the replicas' chaos test, issue 22)."""
    held, never = f"held-{uuid.uuid4()}", f"never-{uuid.uuid4()}"
    async with serving(database) as (app, stubs):
        runs = app.store.runs
        cancel = runs.cancel
        committed, release = asyncio.Event(), asyncio.Event()

        async def held_cancel(*args: Any, **kwargs: Any) -> Any:
            cancelled = await cancel(*args, **kwargs)
            committed.set()
            await release.wait()
            return cancelled

        monkeypatch.setattr(runs, "cancel", held_cancel)
        thread_id, first, queued = await _running_and_queued(stubs, held, never)
        assert queued.status == run_pb2.RUN_STATUS_PENDING
        stream = RunStream(join_stream(stubs, queued))
        await stream.opened()
        joining = asyncio.ensure_future(join_run(stubs, queued))
        request = run_service_pb2.CancelRunRequest(thread_id=thread_id, run_id=queued.run_id)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stubs.runs.CancelRun(request, timeout=0.5)  # held: its deadline passes
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert committed.is_set()
        release.set()
        events = await stream.to_end()
        async with asyncio.timeout(STEP_TIMEOUT):
            joined = await joining
        GATES.open(held)
        assert (await join_run(stubs, first)).status == run_pb2.RUN_STATUS_SUCCESS
    assert [(event, data["status"]) for _, event, data in events] == [("end", "interrupted")]
    assert joined.status == run_pb2.RUN_STATUS_INTERRUPTED
    assert not GATES.arrived(never).is_set(), "the cancelled run never ran its graph"


async def test_a_run_whose_end_lands_as_the_server_stops_still_ends_its_stream(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: a run's end has committed when the server's stop cancels the
    task awaiting that write. The run has ended in the store, so its stream must end with
    `end` (with Redis: before the draining replica's relay closes), not stop short."""
    from turnstile_server.app import App
    from turnstile_server.config import ServerConfig
    from turnstile_server.store import RunSpec

    app = await App.start(ServerConfig(host="127.0.0.1", port=0, database=database), registry())
    runs = app.store.runs
    finish = runs.finish
    committed, release = asyncio.Event(), asyncio.Event()

    async def held_finish(run: Any, status: str, **kwargs: Any) -> Any:
        ended = await finish(run, status, **kwargs)
        committed.set()
        await release.wait()
        return ended

    monkeypatch.setattr(runs, "finish", held_finish)
    gate = f"stop-{uuid.uuid4()}"
    spec = RunSpec(
        thread_id=str(uuid.uuid4()),
        assistant_id="gated",
        graph_id="gated",
        input={"gates": [gate]},
        multitask_strategy="enqueue",
        config={},
        metadata={},
        stream_mode=["values"],
        create_thread=True,
    )
    run = await app.scheduler.admit(spec)
    await arrived(gate)
    GATES.open(gate)
    async with asyncio.timeout(STEP_TIMEOUT):
        await committed.wait()
    stopping = asyncio.ensure_future(app.stop(grace=0))

    async def cancelled() -> None:  # set as the stop cancels the tasks, the run's among them
        assert app.scheduler._stopping

    async with asyncio.timeout(STEP_TIMEOUT):
        await eventually(cancelled, within=STEP_TIMEOUT, interval=0.001)
        release.set()
        await stopping
    events = app.hub.get(run.run_id)
    assert events is not None and events.ended, "the run's stream ended with its `end`"
