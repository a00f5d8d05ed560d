"""Durability: when a run's step checkpoints are committed (`sync`, `async`, `exit`), and that
every mode ends with the same checkpoints, keeps an interrupted run's steps and leaves nothing
of a rolled-back run."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests import support
from tests.faults import Kind, inject
from tests.support import GATES, eventually
from turnstile import FailedPreconditionError, TurnstileClient, get_client
from turnstile.v1 import run_pb2, run_service_pb2, run_service_pb2_grpc
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.store.sqlite import SqliteStore
from turnstile_server.store.sqlite.schema import MIGRATIONS

MODES = ["sync", "async", "exit"]


@pytest.fixture
async def exit_app(tmp_path: Path) -> AsyncIterator[App]:
    """A server whose default durability is `exit`."""
    config = ServerConfig(
        host="127.0.0.1", port=0, database=str(tmp_path / "exit.db"), durability="exit"
    )
    server = await App.start(config, support.registry())
    yield server
    await server.stop(grace=0)


async def history(
    client: TurnstileClient, thread_id: str
) -> list[tuple[str | None, str | None, int]]:
    """The thread's checkpoints, oldest first, as (run id, source, step)."""
    checkpoints = await client.threads.get_history(thread_id, limit=100)
    return [(c["run_id"], c["source"], c["step"]) for c in reversed(checkpoints)]


async def gated_run(
    client: TurnstileClient, thread_id: str, durability: str, **kwargs: Any
) -> dict[str, Any]:
    """A `gated` run through gates `a` and `b`, started; returns once it waits at `b`, its
    first step done."""
    run = await client.runs.create(
        thread_id,
        "gated",
        input={"messages": [{"role": "user", "content": "go"}], "gates": ["a", "b"]},
        durability=durability,  # type: ignore[arg-type]
        **kwargs,
    )
    GATES.open("a")
    await asyncio.wait_for(GATES.arrived("b").wait(), 10)
    return dict(run)


@pytest.mark.parametrize("durability", MODES)
async def test_every_durability_ends_with_the_same_checkpoints_and_values(
    client: TurnstileClient, durability: str
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    run = await gated_run(client, thread_id, durability)
    GATES.open("b")
    result = await client.runs.join(thread_id, run["run_id"])

    ended = await client.runs.get(thread_id, run["run_id"])
    assert ended["status"] == "success"
    assert ended["durability"] == durability
    contents = [m["content"] for m in result["messages"]]
    assert contents == ["go", "passed a", "passed b"]
    assert (await client.threads.get_state(thread_id))["values"] == result
    run_id = run["run_id"]
    assert await history(client, thread_id) == [
        (run_id, "input", 0),
        (run_id, "step", 1),
        (run_id, "step", 2),
    ]


@pytest.mark.parametrize(
    ("durability", "written_while_in_step_two"), [("sync", 2), ("async", 2), ("exit", 1)]
)
async def test_a_step_is_committed_before_the_next_ends_unless_the_run_waits_for_its_exit(
    client: TurnstileClient, durability: str, written_while_in_step_two: int
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    run = await gated_run(client, thread_id, durability)

    async def written() -> None:
        assert len(await history(client, thread_id)) == written_while_in_step_two

    await eventually(written)
    state = await client.threads.get_state(thread_id)
    # The thread's state is that of its committed checkpoints only.
    assert [m["content"] for m in state["values"]["messages"]][1:] == (
        ["passed a"] if written_while_in_step_two == 2 else []
    )
    GATES.open("b")
    await client.runs.join(thread_id, run["run_id"])
    assert len(await history(client, thread_id)) == 3


async def test_async_sends_a_steps_events_and_runs_the_next_step_before_its_commit(
    app: App, client: TurnstileClient
) -> None:
    held = _HeldStepCheckpoints()
    thread_id = (await client.threads.create())["thread_id"]
    with inject(app.store, held):
        stream = client.runs.stream(
            thread_id,
            "gated",
            input={"messages": [{"role": "user", "content": "go"}], "gates": ["a", "b"]},
            stream_mode="updates",
            durability="async",
        )
        GATES.open("a")
        parts = aiter(stream)
        events = [(await asyncio.wait_for(anext(parts), 10)).event for _ in range(3)]
        assert events == ["metadata", "updates", "updates"]  # the input's, then step 1's
        await asyncio.wait_for(GATES.arrived("b").wait(), 10)
        assert await asyncio.to_thread(held.holding.wait, 10)  # step 1's write, held
        assert len(await history(client, thread_id)) == 1
        held.release.set()
        GATES.open("b")
        rest = [part.event async for part in parts]
    assert rest == ["updates", "end"]
    assert len(await history(client, thread_id)) == 3


async def test_async_writes_a_step_only_once_the_one_before_is_committed(
    app: App, client: TurnstileClient
) -> None:
    held = _HeldStepCheckpoints(fail=True)
    thread_id = (await client.threads.create())["thread_id"]
    with inject(app.store, held):
        run = await gated_run(client, thread_id, "async")
        assert await asyncio.to_thread(held.holding.wait, 10)  # step 1's write, held
        GATES.open("b")  # step 2 is yielded while step 1's write is still held ...
        # Not a synchronisation: the time a runner that did not wait would take to queue step
        # 2's write behind step 1's (the assertions below hold however long this is).
        await asyncio.sleep(0.05)
        held.release.set()  # step 1's write fails
        ended = await client.runs.join(thread_id, run["run_id"])
    failed = await client.runs.get(thread_id, run["run_id"])
    assert failed["status"] == "error" and failed["error"] is not None
    assert failed["error"]["type"] == "StoreUnavailable"
    assert [m["content"] for m in ended["messages"]] == ["go"]
    # Not step 2 without step 1: the thread's state is its input.
    assert [source for _, source, _ in await history(client, thread_id)] == ["input"]


async def superseded(
    client: TurnstileClient, durability: str, strategy: str
) -> tuple[str, str, str, dict[str, Any]]:
    """A gated run in its second step, superseded by an `echo` run with `strategy`; returns
    the thread's id, the old and the new run's ids, and the new run's values."""
    thread_id = (await client.threads.create())["thread_id"]
    old = await gated_run(client, thread_id, durability)
    new = await client.runs.create(
        thread_id,
        "echo",
        input={"messages": [{"role": "user", "content": "again"}]},
        multitask_strategy=strategy,  # type: ignore[arg-type]
        durability=durability,  # type: ignore[arg-type]
    )
    values = await client.runs.join(thread_id, new["run_id"])
    return thread_id, old["run_id"], new["run_id"], values


@pytest.mark.parametrize("durability", MODES)
async def test_an_interrupted_runs_completed_steps_are_kept_before_the_next_runs_input(
    client: TurnstileClient, durability: str
) -> None:
    thread_id, old, new, _ = await superseded(client, durability, "interrupt")

    assert (await client.runs.get(thread_id, old))["status"] == "interrupted"
    assert await history(client, thread_id) == [
        (old, "input", 0),
        (old, "step", 1),
        (new, "input", 0),
        (new, "step", 1),
        (new, "step", 2),
    ]


@pytest.mark.parametrize("durability", MODES)
async def test_a_rolled_back_run_leaves_no_checkpoint_whatever_its_durability(
    client: TurnstileClient, durability: str
) -> None:
    thread_id, old, new, values = await superseded(client, durability, "rollback")

    assert [m["content"] for m in values["messages"]] == ["again", "again"]
    assert [run_id for run_id, _, _ in await history(client, thread_id)] == [new] * 3
    assert old not in {run["run_id"] for run in await client.runs.list(thread_id)}


async def test_a_run_that_does_not_say_takes_the_servers_durability(exit_app: App) -> None:
    client = get_client(url=exit_app.address)
    try:
        thread_id = (await client.threads.create())["thread_id"]
        run = await gated_run(client, thread_id, durability=None)  # type: ignore[arg-type]
        assert run["durability"] == "exit"
        assert len(await history(client, thread_id)) == 1  # only its input
        said = await client.runs.create(
            thread_id, "echo", input={}, durability="sync", multitask_strategy="enqueue"
        )
        assert said["durability"] == "sync"
        GATES.open("b")
        await client.runs.join(thread_id, said["run_id"])
    finally:
        await client.close()


async def test_an_unknown_durability_is_refused(app: App, client: TurnstileClient) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    with pytest.raises(ValueError, match="unknown durability 'later'"):
        await client.runs.create(thread_id, "echo", durability="later")  # type: ignore[arg-type]
    async with grpc.aio.insecure_channel(app.address) as channel:
        stub = run_service_pb2_grpc.RunServiceStub(channel)
        request = run_service_pb2.CreateRunRequest(
            thread_id=thread_id,
            assistant_id="echo",
            durability=7,  # type: ignore[arg-type]
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateRun(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "durability: 7 is not a valid value" in (refused.value.details() or "")
    assert await client.runs.list(thread_id) == []
    assert run_pb2.DURABILITY_EXIT == 3  # the wire numbers are the contract's


async def test_a_request_id_replayed_with_another_durability_is_refused(
    client: TurnstileClient,
) -> None:
    thread_id = (await client.threads.create())["thread_id"]
    await client.runs.create(thread_id, "echo", input={}, request_id="r-1", durability="exit")
    with pytest.raises(FailedPreconditionError) as refused:
        await client.runs.create(thread_id, "echo", input={}, request_id="r-1", durability="sync")
    assert refused.value.reason == "REQUEST_ID_REUSED"
    assert refused.value.metadata.get("field") == "durability"


class _HeldStepCheckpoints:
    """Faults that hold the writer's thread at the first step checkpoint until released, then
    (with `fail`) fail it with an I/O error."""

    def __init__(self, *, fail: bool = False) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        self._fail = fail

    def decide(self, sql: str, parameters: Any) -> Kind | None:
        if not sql.startswith("INSERT INTO checkpoints") or "step" not in parameters:
            return None
        if self.holding.is_set():
            return None
        self.holding.set()
        self.release.wait(10)
        return "io" if self._fail else None


async def test_runs_written_before_the_durability_column_read_as_sync(tmp_path: Path) -> None:
    path = tmp_path / "schema4.db"
    with sqlite3.connect(path) as db:
        for migration in MIGRATIONS[:4]:
            db.executescript(migration)
        db.execute("PRAGMA user_version = 4")
        db.execute(
            "INSERT INTO threads (thread_id, status, create_time, update_time)"
            " VALUES ('t', 'idle', 1, 1)"
        )
        db.execute(
            "INSERT INTO runs (run_id, thread_id, assistant_id, graph_id, status,"
            " multitask_strategy, create_time, not_before)"
            " VALUES ('r', 't', 'echo', 'echo', 'success', 'enqueue', 1, 1)"
        )
    db.close()
    store = await SqliteStore.open(path)
    try:
        assert (await store.runs.get("t", "r")).durability == "sync"
    finally:
        await store.close()
