"""The scheduler's global bound and the checkpoint cost of a step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests import support
from tests.support import GATES, eventually
from turnstile import ResourceExhaustedError, RunStatus, TurnstileClient, get_client
from turnstile_server.app import App
from turnstile_server.config import ServerConfig


async def test_no_more_runs_execute_at_once_than_max_running(tmp_path: Path) -> None:
    app = await App.start(
        ServerConfig(port=0, database=str(tmp_path / "bound.db"), max_running=2), support.registry()
    )
    client = get_client(url=app.address)
    try:
        runs = []
        for i in range(5):
            tid = (await client.threads.create())["thread_id"]
            runs.append(await client.runs.create(tid, "gated", input={"gates": [f"b{i}"]}))

        async def two_running() -> list[RunStatus]:
            statuses = [
                (await client.runs.get(r["thread_id"], r["run_id"]))["status"] for r in runs
            ]
            assert statuses.count("running") == 2
            return statuses

        statuses = await eventually(two_running)
        assert statuses.count("pending") == 3
        assert app.scheduler.running == 2
        for i in range(5):
            GATES.open(f"b{i}")
        for run in runs:
            assert (await client.runs.join_run(run["thread_id"], run["run_id"])).run[
                "status"
            ] == "success"
    finally:
        await client.close()
        await app.stop(grace=0)


async def test_a_step_checkpoint_stores_only_its_update_not_the_whole_thread(
    client: TurnstileClient, app: App
) -> None:
    tid = (await client.threads.create())["thread_id"]
    for i in range(60):
        await client.runs.wait(
            tid, "echo", input={"messages": [{"role": "user", "content": f"m{i:03}"}]}
        )
    state = await client.threads.get_state(tid)
    assert len(state["values"]["messages"]) == 120
    with sqlite3.connect(app.config.database) as db:
        sizes = [
            row[0]
            for row in db.execute(
                "SELECT length(update_json) FROM checkpoints WHERE thread_id = ? AND step = 2"
                " ORDER BY seq",
                (tid,),
            )
        ]
    assert len(sizes) == 60
    assert max(sizes[-10:]) <= 1.1 * max(sizes[:10]), "a step's write does not grow with the thread"


async def test_a_run_over_its_time_limit_ends_timeout_and_the_thread_goes_on(
    client: TurnstileClient,
) -> None:
    tid = (await client.threads.create())["thread_id"]
    timed = await client.runs.wait_run(
        tid, "gated", input={"gates": ["never-opened"]}, timeout_seconds=0.2
    )
    thread = await client.threads.get(tid)
    after = await client.runs.wait_run(tid, "echo", input={"messages": []})

    assert timed.run["status"] == "timeout"
    assert timed.run["timeout_seconds"] == 0.2
    assert timed.run["error"] == {
        "type": "RunTimeout",
        "message": "the run exceeded its time limit of 0.2 s",
    }
    assert thread["status"] == "error"
    assert after.run["status"] == "success"


async def test_the_server_default_time_limit_applies_and_a_graphs_own_timeout_is_an_error(
    tmp_path: Path,
) -> None:
    app = await App.start(
        ServerConfig(port=0, database=str(tmp_path / "t.db"), run_timeout_seconds=0.2),
        support.registry(),
    )
    client = get_client(url=app.address)
    try:
        tid = (await client.threads.create())["thread_id"]
        timed = await client.runs.wait_run(tid, "gated", input={"gates": ["never"]})
        own = await client.runs.wait_run(tid, "gated", input={"gates": ["raise-timeout"]})
    finally:
        await client.close()
        await app.stop(grace=0)
    assert timed.run["status"] == "timeout"
    assert own.run["status"] == "error"
    assert own.run["error"] is not None and own.run["error"]["type"] == "TimeoutError"


async def test_a_thread_with_max_queued_pending_runs_refuses_another_enqueue(
    tmp_path: Path,
) -> None:
    app = await App.start(
        ServerConfig(port=0, database=str(tmp_path / "q.db"), max_queued=2), support.registry()
    )
    client = get_client(url=app.address)
    try:
        tid = (await client.threads.create())["thread_id"]
        await client.runs.create(tid, "gated", input={"gates": ["q"]})
        for _ in range(2):
            await client.runs.create(tid, "echo", input={}, multitask_strategy="enqueue")
        with pytest.raises(ResourceExhaustedError) as full:
            await client.runs.create(tid, "echo", input={}, multitask_strategy="enqueue")
        runs = await client.runs.list(tid)
        replacing = await client.runs.create(tid, "echo", input={}, multitask_strategy="rollback")
        done = await client.runs.join_run(tid, replacing["run_id"])
    finally:
        await client.close()
        await app.stop(grace=0)
    assert full.value.reason == "QUEUE_FULL"
    assert full.value.metadata == {"thread_id": tid, "max_queued": "2"}
    assert len(runs) == 3, "the refused run was not written"
    assert done.run["status"] == "success"
