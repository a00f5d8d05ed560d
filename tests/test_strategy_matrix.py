"""Every multitask strategy against every situation a thread can be in (SPEC §3), on both
runtimes: the graphs `gated`, `echo` and `failing` are native, or LangGraph stand-ins
(`tests/lg_graphs.py`). The row "thread waiting for input" (LangGraph only, in both modes of
`on_pending_interrupt`) is `test_new_input_on_a_thread_waiting_for_input` in
`tests/test_human_in_the_loop.py`, on SQLite and PostgreSQL (`tests/test_postgres_hitl.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.lg_graphs import lg_registry
from tests.support import GATES, client_of, eventually, registry
from turnstile import ConflictError, MultitaskStrategy, NotFoundError, TurnstileClient

STRATEGIES: list[MultitaskStrategy] = ["reject", "enqueue", "interrupt", "rollback"]
SITUATIONS = [
    "idle",
    "pending_delayed",
    "running",
    "running_and_queued",
    "after_success",
    "after_error",
    "after_interrupted",
]


@pytest.fixture(params=["native", "langgraph"])
async def client(request: pytest.FixtureRequest, database: str) -> AsyncIterator[TurnstileClient]:
    graphs = registry() if request.param == "native" else lg_registry()
    async with client_of(database, graphs) as (_, sdk):
        yield sdk


@dataclass
class Situation:
    thread_id: str
    inflight: list[str] = field(default_factory=list)  # admission order
    previous: str | None = None
    previous_status: str | None = None
    gates: list[str] = field(default_factory=list)
    initial: dict[str, Any] = field(default_factory=dict)


async def wait_until_running(client: TurnstileClient, thread_id: str, run_id: str) -> None:
    async def check() -> None:
        assert (await client.runs.get(thread_id, run_id))["status"] == "running"

    await eventually(check)


async def make(client: TurnstileClient, name: str) -> Situation:
    thread = await client.threads.create()
    tid = thread["thread_id"]
    s = Situation(tid, initial=(await client.threads.get_state(tid))["values"])
    if name == "pending_delayed":
        run = await client.runs.create(tid, "gated", input={"gates": ["d"]}, after_seconds=30)
        s.inflight, s.gates = [run["run_id"]], ["d"]
    elif name in ("running", "running_and_queued"):
        run = await client.runs.create(tid, "gated", input={"gates": ["a"]})
        await GATES.arrived("a").wait()
        s.inflight, s.gates = [run["run_id"]], ["a"]
        if name == "running_and_queued":
            for gate in ("b", "c"):
                queued = await client.runs.create(tid, "gated", input={"gates": [gate]})
                assert queued["status"] == "pending"
                s.inflight.append(queued["run_id"])
                s.gates.append(gate)
    elif name == "after_success":
        result = await client.runs.wait_run(
            tid, "echo", input={"messages": [{"role": "user", "content": "x"}]}
        )
        s.previous, s.previous_status = result.run["run_id"], "success"
    elif name == "after_error":
        result = await client.runs.wait_run(tid, "failing")
        s.previous, s.previous_status = result.run["run_id"], "error"
    elif name == "after_interrupted":
        run = await client.runs.create(tid, "gated", input={"gates": ["z"]})
        await GATES.arrived("z").wait()
        await client.runs.cancel(tid, run["run_id"], wait=True)
        s.previous, s.previous_status = run["run_id"], "interrupted"
    return s


@pytest.mark.parametrize("situation", SITUATIONS)
@pytest.mark.parametrize("strategy", STRATEGIES)
async def test_strategy_in_situation(
    client: TurnstileClient, strategy: MultitaskStrategy, situation: str
) -> None:
    s = await make(client, situation)
    tid = s.thread_id
    before = await client.threads.get_state(tid)
    runs_before = {r["run_id"] for r in await client.runs.list(tid, limit=100)}
    new_input = {"messages": [{"role": "user", "content": "new"}]}

    if strategy == "reject" and s.inflight:
        with pytest.raises(ConflictError) as refused:
            await client.runs.create(tid, "echo", input=new_input, multitask_strategy="reject")
        assert refused.value.reason == "THREAD_BUSY"
        assert set(refused.value.metadata["inflight_run_ids"].split(",")) == set(s.inflight)
        assert {r["run_id"] for r in await client.runs.list(tid, limit=100)} == runs_before
        assert (await client.threads.get_state(tid))["values"] == before["values"]
        assert (await client.threads.get(tid))["status"] == "busy"
        for gate in s.gates:
            GATES.open(gate)
        return

    new = await client.runs.create(tid, "echo", input=new_input, multitask_strategy=strategy)
    if strategy == "enqueue" and s.inflight:
        assert new["status"] == "pending"
        assert new["queue_position"] == len(s.inflight)
    for gate in s.gates:
        GATES.open(gate)
    result = await client.runs.join_run(tid, new["run_id"])
    assert result.run["status"] == "success"
    assert result.values["messages"][-1]["content"] == "new"

    if s.inflight and strategy == "enqueue":
        runs = [await client.runs.get(tid, run_id) for run_id in [*s.inflight, new["run_id"]]]
        assert [r["status"] for r in runs] == ["success"] * len(runs)
        starts = [t for r in runs if (t := r["start_time"]) is not None]
        assert len(starts) == len(runs), "every run started"
        assert starts == sorted(starts), "queued runs start in admission order"
    elif s.inflight and strategy == "interrupt":
        for position, run_id in enumerate(s.inflight):
            old = await client.runs.get(tid, run_id)
            assert old["status"] == "interrupted"
            assert old["superseded_by"] == new["run_id"]
            assert new["run_id"] in (old["cancel_reason"] or "")
            started = situation != "pending_delayed" and position == 0
            assert (old["start_time"] is not None) == started, "pending runs never start"
    elif s.inflight and strategy == "rollback":
        for run_id in s.inflight:
            with pytest.raises(NotFoundError):
                await client.runs.get(tid, run_id)
        history = await client.threads.get_history(tid, limit=100)
        assert not {c["run_id"] for c in history} & set(s.inflight)
        # Exactly the state before the rolled-back runs, plus the new run's input and answer.
        assert result.values["messages"][:-2] == s.initial.get("messages", [])
        assert "gates" not in result.values, "the rolled-back run's input is gone"

    if s.previous is not None:
        previous = await client.runs.get(tid, s.previous)
        assert previous["status"] == s.previous_status, "ended runs are never touched"
    assert (await client.threads.get(tid))["status"] == "idle"
