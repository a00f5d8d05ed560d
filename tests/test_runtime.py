"""The graph-runtime interface: the registry asks each runtime, and a runtime other than the
native one runs end to end through the host the runner lends it (checkpoints, events,
cancellation, rollback)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import GATES, client_of
from turnstile import NotFoundError
from turnstile_server.errors import InvalidArgument
from turnstile_server.graph import GraphRegistry, load_graph, prepare_graph
from turnstile_server.graphs.echo import echo
from turnstile_server.runtime.interface import GraphRuntime, PreparedGraph, RunHost
from turnstile_server.runtime.native import NativeGraph, NativeRuntime

GATE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Script:
    """What the scripted runtime runs: updates applied one per step, each behind a gate."""

    updates: list[dict[str, Any]]
    entered: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


class ScriptRuntime:
    """A runtime unlike the native one: its graphs are data, its reducer adds numbers."""

    name = "script"
    expects = "a Script of updates"

    def prepare(self, obj: object) -> PreparedGraph | None:
        if isinstance(obj, Script):
            return ScriptGraph(obj)
        if obj == "broken script":
            raise InvalidArgument("a broken script cannot run")
        return None


@dataclass(frozen=True)
class ScriptGraph:
    graph: Script
    runtime: str = ScriptRuntime.name

    async def execute(self, host: RunHost) -> None:
        state = await host.state()
        totals = dict(state.values)
        step = max(0, host.start.checkpoints - 1)
        for number, update in enumerate(self.graph.updates):
            self.graph.entered.append(host.run.run_id)
            gate = f"{host.run.run_id}-{number}"
            GATES.arrived(gate).set()
            try:
                await GATES.event(gate).wait()
            except asyncio.CancelledError:
                self.graph.cancelled.append(host.run.run_id)
                raise
            reduced = {key: totals.get(key, 0) + value for key, value in update.items()}
            step += 1
            await host.landed(host.write([(step, "step", reduced)]))
            totals.update(reduced)
            host.emit("updates", reduced, checked=True)
            host.context.emit_custom({"step": step})


def registry(script: Script) -> GraphRegistry:
    """Both runtimes, with a native graph and the script."""
    graphs = GraphRegistry([NativeRuntime(), ScriptRuntime()])
    graphs.register("echo", echo)
    graphs.register("script", script)
    return graphs


async def arrive(run_id: str, number: int) -> None:
    async with asyncio.timeout(GATE_TIMEOUT):
        await GATES.arrived(f"{run_id}-{number}").wait()


# --- the registry ------------------------------------------------------------------------


def test_each_runtime_is_asked_and_the_first_that_recognises_prepares() -> None:
    graphs = GraphRegistry([NativeRuntime(), ScriptRuntime()])
    script = Script([{"n": 1}])
    graphs.register("echo", echo)
    graphs.register("script", script)
    assert graphs.prepared("echo").runtime == "native"
    assert graphs.prepared("script").runtime == "script"
    assert graphs.get("script") is script and graphs.get("echo") is echo
    assert isinstance(graphs.prepared("echo"), NativeGraph)


def test_when_every_runtime_refuses_the_error_names_what_each_expects() -> None:
    graphs = GraphRegistry([NativeRuntime(), ScriptRuntime()])
    with pytest.raises(InvalidArgument) as refused:
        graphs.register("g", 42)
    message = refused.value.message
    assert message.startswith("graph 'g': 42 is not an async generator function")
    assert "(native runtime); nor a Script of updates (script runtime)" in message


def test_a_runtime_that_recognises_but_cannot_run_an_object_refuses_it_itself() -> None:
    with pytest.raises(InvalidArgument, match="a broken script cannot run"):
        prepare_graph("broken script", "g", [NativeRuntime(), ScriptRuntime()])


def test_a_registry_without_runtimes_says_so() -> None:
    with pytest.raises(InvalidArgument, match="no runtime is registered"):
        GraphRegistry([]).register("echo", echo)


def test_a_spec_naming_what_no_runtime_runs_names_the_native_form() -> None:
    with pytest.raises(InvalidArgument, match=r"'os:sep' is not an async generator function"):
        load_graph("g=os:sep")


def test_the_runtimes_satisfy_the_interface() -> None:
    runtimes: list[GraphRuntime] = [NativeRuntime(), ScriptRuntime()]
    assert [runtime.name for runtime in runtimes] == ["native", "script"]


# --- another runtime, end to end ---------------------------------------------------------


async def test_another_runtime_checkpoints_reduces_and_streams_through_the_host(
    tmp_path: Path,
) -> None:
    script = Script([{"n": 1}, {"n": 2}])
    async with client_of(str(tmp_path / "script.db"), registry(script)) as (_, client):
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(thread_id, "script", stream_mode=["updates", "custom"])
        parts = []
        stream = client.runs.join_stream(thread_id, run["run_id"])
        for number in range(2):
            await arrive(run["run_id"], number)
            GATES.open(f"{run['run_id']}-{number}")
        async for part in stream:
            parts.append((part.event, part.data))
        assert (await client.threads.get_state(thread_id))["values"] == {"n": 3}
        history = await client.threads.get_history(thread_id)
        assert [(c["source"], c["step"], c["values"]) for c in reversed(history)] == [
            ("input", 0, {}),
            ("step", 1, {"n": 1}),
            ("step", 2, {"n": 3}),
        ]
        events = [(event, data) for event, data in parts if event != "metadata"]
        assert events[:4] == [
            ("updates", {"n": 1}),
            ("custom", {"step": 1}),
            ("updates", {"n": 3}),
            ("custom", {"step": 2}),
        ]
        assert events[-1][0] == "end" and events[-1][1]["status"] == "success"
        # The native runtime serves its graphs beside it, on the same thread.
        echoed = await client.runs.wait(
            thread_id, "echo", input={"messages": [{"role": "user", "content": "hi"}]}
        )
        assert echoed["n"] == 3 and echoed["messages"][-1]["content"] == "hi"


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_cancellation_reaches_another_runtime_and_rollback_leaves_nothing(
    tmp_path: Path, action: str
) -> None:
    script = Script([{"n": 1}, {"n": 10}])
    async with client_of(str(tmp_path / "script.db"), registry(script)) as (_, client):
        thread_id = (await client.threads.create())["thread_id"]
        run = await client.runs.create(thread_id, "script")
        await arrive(run["run_id"], 0)
        GATES.open(f"{run['run_id']}-0")
        await arrive(run["run_id"], 1)
        await client.runs.cancel(thread_id, run["run_id"], wait=True, action=action)  # type: ignore[arg-type]
        assert script.cancelled == [run["run_id"]]
        values = (await client.threads.get_state(thread_id))["values"]
        if action == "interrupt":
            assert (await client.runs.get(thread_id, run["run_id"]))["status"] == "interrupted"
            assert values == {"n": 1}
        else:
            with pytest.raises(NotFoundError):
                await client.runs.get(thread_id, run["run_id"])
            assert values == {}
            assert await client.threads.get_history(thread_id) == []
