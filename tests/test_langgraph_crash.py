"""Crash recovery of a LangGraph run: killed with SIGKILL mid-run, the server resumes it at
start from its last committed checkpoint with input None, as LangGraph resumes.

What Turnstile's resume adds is asserted, not only the outcome: the run's attempt is numbered
(the run, its `metadata` event and every checkpoint of the attempt say 2), the resumed attempt
writes no input checkpoint (the input is applied once) and only supersteps after the last
committed one (none twice)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.processes import STARTUP, serving
from tests.support import eventually
from turnstile import ThreadState, get_client

GRAPH = "file_gated=tests.lg_graphs:FILE_GATED"


def texts(state: ThreadState) -> list[tuple[str, str]]:
    return [(m["type"], m["content"]) for m in state["values"]["messages"]]


async def test_sigkill_mid_langgraph_run_resumes_from_its_last_checkpoint_input_applied_once(
    tmp_path: Path,
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    (gates / "a").touch()
    (gates / "c").touch()
    config = {"configurable": {"gate_dir": str(gates)}}
    database = tmp_path / "crash.db"

    async with serving(database, GRAPH) as (process, address):
        client = get_client(url=address)
        thread_id = (await client.threads.create())["thread_id"]
        cut = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "one"}], "gates": ["a", "b"]},
            config=config,
        )
        queued = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "two"}], "gates": ["c"]},
            config=config,
            multitask_strategy="enqueue",
        )

        async def mid_way() -> None:
            assert (gates / "b.arrived").exists()
            assert ("ai", "passed a") in texts(await client.threads.get_state(thread_id))

        await eventually(mid_way, within=STARTUP)
        await client.close()
        os.kill(process.pid, signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL

    (gates / "a.arrived").unlink()
    (gates / "b").touch()
    async with serving(database, GRAPH) as (_, address):
        client = get_client(url=address)
        try:
            results = [await client.runs.join_run(thread_id, r["run_id"]) for r in (cut, queued)]
            state = await client.threads.get_state(thread_id)
            history = await client.threads.get_history(thread_id, limit=100)
            resumed_events = [p async for p in client.runs.join_stream(thread_id, cut["run_id"])]
        finally:
            await client.close()

    assert [r.run["status"] for r in results] == ["success", "success"]
    assert [r.run["attempt"] for r in results] == [2, 1]
    assert not (gates / "a.arrived").exists(), "gate a's superstep was not run again"
    assert texts(state) == [
        ("human", "one"),
        ("ai", "passed a"),
        ("ai", "passed b"),
        ("human", "two"),
        ("ai", "passed c"),
    ]
    inputs = [c for c in history if c["source"] == "input"]
    assert [c["run_id"] for c in inputs] == [queued["run_id"], cut["run_id"]], "one input each"
    attempts = {c["metadata"]["run_attempt"] for c in history if c["run_id"] == cut["run_id"]}
    assert attempts == {1, 2}, "the resumed attempt's checkpoints say so"
    first = resumed_events[0]
    assert first.event == "metadata" and first.data["attempt"] == 2, first
    by_attempt = {
        n: [
            c for c in history if c["run_id"] == cut["run_id"] and c["metadata"]["run_attempt"] == n
        ]
        for n in (1, 2)
    }
    assert [c["metadata"]["source"] for c in by_attempt[2]] == ["loop"], "no input again"
    assert [c["metadata"]["step"] for c in by_attempt[1]] == [1, 0, -1], "input, START, a"
    assert [c["metadata"]["step"] for c in by_attempt[2]] == [2], "b only: no superstep twice"
    parent = by_attempt[2][0]["parent_checkpoint"]
    assert parent is not None and parent["checkpoint_id"] == by_attempt[1][0]["checkpoint_id"]


async def test_an_exit_durability_langgraph_run_killed_mid_run_resumes_from_its_input_once(
    tmp_path: Path,
) -> None:
    """`exit` commits nothing before the run ends: the resumed attempt applies the input then,
    and only then (LangGraph had stored no checkpoint of the run)."""
    gates = tmp_path / "gates"
    gates.mkdir()
    (gates / "a").touch()
    config = {"configurable": {"gate_dir": str(gates)}}
    database = tmp_path / "crash.db"

    async with serving(database, GRAPH) as (process, address):
        client = get_client(url=address)
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "one"}], "gates": ["a", "b"]},
            config=config,
            durability="exit",
        )

        async def in_step_two() -> None:
            assert (gates / "b.arrived").exists()

        await eventually(in_step_two, within=STARTUP)
        await client.close()
        os.kill(process.pid, signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL

    (gates / "a.arrived").unlink()
    (gates / "b").touch()
    async with serving(database, GRAPH) as (_, address):
        client = get_client(url=address)
        try:
            result = await client.runs.join_run(thread_id, run["run_id"])
            state = await client.threads.get_state(thread_id)
        finally:
            await client.close()

    assert result.run["status"] == "success" and result.run["attempt"] == 2
    assert (gates / "a.arrived").exists(), "nothing was committed: gate a ran again"
    assert texts(state) == [("human", "one"), ("ai", "passed a"), ("ai", "passed b")]
