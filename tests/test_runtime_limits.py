"""The scheduler's global bound and the checkpoint cost of a step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests import support
from tests.support import GATES, eventually
from turnstile import RunStatus, TurnstileClient, get_client
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
