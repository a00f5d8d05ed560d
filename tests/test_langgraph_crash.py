"""Crash recovery of a LangGraph run: killed with SIGKILL mid-run, the server resumes it at
start from its last committed checkpoint with input None, as LangGraph resumes (a run that
committed none starts again from its input, or from its `checkpoint_id` for a fork).

What Turnstile's resume adds is asserted, not only the outcome: the run's attempt is numbered
(the run, its `metadata` event and every checkpoint of the attempt say 2), the resumed attempt
writes no input checkpoint (the input is applied once) and only supersteps after the last
committed one (none twice). For a plain input LangGraph itself would continue from the run's
own checkpoint even if given the input again (its config's `run_id` matches the checkpoint's
metadata); what needs Turnstile's input None is a run's `command`, shown by the resume test
(it fails with the attempt given `_input(run)`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.processes import STARTUP, FileGates, served_client, sigkill
from tests.support import eventually
from turnstile import ThreadState

GRAPH = "file_gated=tests.lg_graphs:FILE_GATED"


def texts(state: ThreadState) -> list[tuple[str, str]]:
    return [(m["type"], m["content"]) for m in state["values"]["messages"]]


async def test_sigkill_mid_langgraph_run_resumes_from_its_last_checkpoint_input_applied_once(
    tmp_path: Path,
) -> None:
    gates = FileGates(tmp_path / "gates", "a", "c")
    database = tmp_path / "crash.db"

    async with served_client(database, GRAPH) as (process, client):
        thread_id = (await client.threads.create())["thread_id"]
        cut = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "one"}], "gates": ["a", "b"]},
            config=gates.config,
        )
        queued = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "two"}], "gates": ["c"]},
            config=gates.config,
            multitask_strategy="enqueue",
        )

        async def mid_way() -> None:
            assert gates.arrived("b")
            assert ("ai", "passed a") in texts(await client.threads.get_state(thread_id))

        await eventually(mid_way, within=STARTUP)
        await sigkill(process)

    gates.forget("a")
    gates.open("b")
    async with served_client(database, GRAPH) as (_, client):
        results = [await client.runs.join_run(thread_id, r["run_id"]) for r in (cut, queued)]
        state = await client.threads.get_state(thread_id)
        history = await client.threads.get_history(thread_id, limit=100)
        resumed_events = [p async for p in client.runs.join_stream(thread_id, cut["run_id"])]

    assert [r.run["status"] for r in results] == ["success", "success"]
    assert [r.run["attempt"] for r in results] == [2, 1]
    assert not gates.arrived("a"), "gate a's superstep was not run again"
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
    gates = FileGates(tmp_path / "gates", "a")
    database = tmp_path / "crash.db"

    async with served_client(database, GRAPH) as (process, client):
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "one"}], "gates": ["a", "b"]},
            config=gates.config,
            durability="exit",
        )

        async def in_step_two() -> None:
            assert gates.arrived("b")

        await eventually(in_step_two, within=STARTUP)
        await sigkill(process)

    gates.forget("a")
    gates.open("b")
    async with served_client(database, GRAPH) as (_, client):
        result = await client.runs.join_run(thread_id, run["run_id"])
        state = await client.threads.get_state(thread_id)

    assert result.run["status"] == "success" and result.run["attempt"] == 2
    assert gates.arrived("a"), "nothing was committed: gate a ran again"
    assert texts(state) == [("human", "one"), ("ai", "passed a"), ("ai", "passed b")]


async def test_a_fork_killed_before_its_first_checkpoint_resumes_from_its_checkpoint_id(
    tmp_path: Path,
) -> None:
    """A run with `checkpoint_id` (time travel) cut before it committed anything starts its
    next attempt from that checkpoint again, not from the thread's latest. (`exit` durability:
    the fork's first checkpoint, LangGraph's `fork` copy of the fork point, is committed only
    at the end; with `async` it may or may not have landed when the server is killed.)"""
    gates = FileGates(tmp_path / "gates", "a", "b")
    fork_gates = FileGates(tmp_path / "fork")  # the fork's step at gate b waits here
    database = tmp_path / "crash.db"

    async with served_client(database, GRAPH) as (process, client):
        thread_id = (await client.threads.create())["thread_id"]
        first = await client.runs.wait_run(
            thread_id,
            "file_gated",
            input={"messages": [{"role": "user", "content": "one"}], "gates": ["a", "b"]},
            config=gates.config,
        )
        before = await client.threads.get_history(thread_id, limit=100)
        [fork_point] = [c for c in before if c["next"] == ["gate"] and c["step"] == 1]
        fork = await client.runs.create(
            thread_id,
            "file_gated",
            checkpoint_id=fork_point["checkpoint_id"],
            config=fork_gates.config,
            durability="exit",
        )

        async def at_gate_b() -> None:
            assert fork_gates.arrived("b")

        await eventually(at_gate_b, within=STARTUP)
        await sigkill(process)

    fork_gates.forget("b")
    fork_gates.open("b")
    async with served_client(database, GRAPH) as (_, client):
        result = await client.runs.join_run(thread_id, fork["run_id"])
        state = await client.threads.get_state(thread_id)
        history = await client.threads.get_history(thread_id, limit=100)

    assert first.run["status"] == "success"
    assert (result.run["status"], result.run["attempt"]) == ("success", 2)
    assert fork_gates.arrived("b"), "the second attempt ran gate b again, from the fork point"
    forked = [c for c in history if c["run_id"] == fork["run_id"]]
    assert forked, "the fork's second attempt wrote its steps"
    parent = forked[-1]["parent_checkpoint"]  # the fork's oldest checkpoint's
    assert parent is not None and parent["checkpoint_id"] == fork_point["checkpoint_id"]
    assert {c["metadata"]["run_attempt"] for c in forked} == {2}
    assert texts(state) == [("human", "one"), ("ai", "passed a"), ("ai", "passed b")]
    assert state["checkpoint_id"] == forked[0]["checkpoint_id"]


@pytest.mark.parametrize("command", ["by-id", "with-update"])
async def test_a_resume_killed_after_its_first_step_resumes_without_its_command_again(
    tmp_path: Path, command: str
) -> None:
    """Why the resumed attempt gets input None rather than the run's input again. For a plain
    input LangGraph would continue by itself (the config's `run_id` is the one in the latest
    checkpoint's metadata), but a run's `command` is a `Command`, which LangGraph applies to
    whatever the thread's latest checkpoint is. A resume cut after the step it answered,
    given its `Command` again, would answer an interrupt no longer pending (by id: refused,
    UNKNOWN_INTERRUPT, the run ERROR) or apply its `update` twice. Given None, it goes on
    from the step it committed, its command applied once (both cases fail with the attempt
    given `_input(run)`)."""
    gates = FileGates(tmp_path / "gates")
    database = tmp_path / "crash.db"
    graph = "approval=tests.hitl_graphs:FILE_APPROVAL"

    async with served_client(database, graph) as (process, client):
        thread_id = (await client.threads.create())["thread_id"]
        asked = await client.runs.wait_run(
            thread_id, "approval", input={"request": "pay"}, config=gates.config
        )
        [[pending]] = (await client.threads.get(thread_id))["interrupts"].values()
        answer: dict[str, Any] = (
            {"resume": {pending["id"]: "yes"}}
            if command == "by-id"
            else {"resume": "yes", "update": {"steps": ["manual"]}}
        )
        resume = await client.runs.create(
            thread_id, "approval", command=answer, config=gates.config
        )

        async def answered() -> None:
            assert gates.arrived("act")
            state = await client.threads.get_state(thread_id)
            assert state["next"] == ["act"] and state["run_id"] == resume["run_id"]

        await eventually(answered, within=STARTUP)
        await sigkill(process)

    gates.open("act")
    async with served_client(database, graph) as (_, client):
        result = await client.runs.join_run(thread_id, resume["run_id"])
        history = await client.threads.get_history(thread_id, limit=100)
        thread = await client.threads.get(thread_id)

    assert asked.run["status"] == "success"
    assert (result.run["status"], result.run["attempt"]) == ("success", 2), result.run["error"]
    assert result.values["decision"] == "yes"
    steps = ["ask", "act"] if command == "by-id" else ["manual", "ask", "act"]
    assert result.values["steps"] == steps, "answered once, updated once, each step once"
    mine = [c for c in history if c["run_id"] == resume["run_id"]]
    assert [c["metadata"]["run_attempt"] for c in mine] == [2, 1]
    assert [c["metadata"]["step"] for c in mine] == [2, 1], "ask, then act: none twice"
    assert (thread["status"], thread["interrupts"]) == ("idle", {})
