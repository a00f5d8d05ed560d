"""Graphs execute on graph loops (`runtime/graph_loops.py`): a graph that computes without
awaiting leaves the API answering, health checks, reads, admissions and cancellations, and
is cancelled at its next await.

Each spinning graph computes, never awaiting, until the test releases it; the test releases it
only after the calls it makes have answered (each with a deadline), and always in a `finally`.
With graphs on the API's loop (`graph_threads=0`, as before the graph loops) the calls cannot
be answered while the graph spins: they fail with DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import grpc
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from tests import support
from tests.rpc import Stubs, struct
from turnstile.v1 import run_pb2, run_service_pb2, thread_pb2, thread_service_pb2
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.graph import GraphRegistry, RunContext

DEADLINE = 5.0  # seconds each API call may take while a graph spins
SPIN_BOUND = 20.0  # a spinning graph gives up after this long, so a broken build fails, not hangs


@dataclass
class Spin:
    """The events of one spinning graph: it says it spins, the test releases it."""

    spinning: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    threads: list[str] = field(default_factory=list)


SPINS: dict[str, Spin] = {}


def spin_of(name: str) -> Spin:
    return SPINS.setdefault(name, Spin())


def compute_until_released(spin: Spin, said: str | None = None, ids: str = "") -> None:
    """Computes, holding the interpreter and never awaiting, until released (or the bound);
    first says so (and the run's `ids`) in the file `said`, if any."""
    spin.threads.append(threading.current_thread().name)
    if said:
        Path(said).write_text(ids + "\n")
    spin.spinning.set()
    give_up = time.monotonic() + SPIN_BOUND
    while not spin.release.is_set() and time.monotonic() < give_up:
        sum(range(100))


async def spinning(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Native: computes until input `spin` is released, then awaits once and yields."""
    ids = f"{ctx.thread_id} {ctx.run_id} spinning"
    support.STEPS.enter(ctx.thread_id, ctx.run_id)  # (a run starting beside it is an overlap)
    try:
        compute_until_released(spin_of(ctx.input["spin"]), ctx.input.get("spin_file"), ids)
        await asyncio.sleep(0)  # the first await: a cancellation arrives here
        yield {"messages": [{"type": "ai", "content": "spun"}]}
    finally:
        support.STEPS.exit(ctx.thread_id, ctx.run_id)


class Spun(TypedDict, total=False):
    spin: str
    spin_file: str
    spun: bool


async def _spin_node(state: Spun, config: RunnableConfig) -> dict[str, Any]:
    ids = config["configurable"]
    said = f"{ids['thread_id']} {ids['run_id']} lg_spinning"
    compute_until_released(spin_of(state["spin"]), state.get("spin_file"), said)
    await asyncio.sleep(0)
    return {"spun": True}


def _langgraph_spinning() -> Any:
    builder = StateGraph(Spun)
    builder.add_node("spin", _spin_node)
    builder.add_edge(START, "spin")
    builder.add_edge("spin", END)
    return builder.compile()


def _registry() -> GraphRegistry:
    graphs = support.registry()
    graphs.register("spinning", spinning)
    graphs.register("lg_spinning", _langgraph_spinning())
    return graphs


@asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[App, grpc.aio.Channel]]:
    config = ServerConfig(host="127.0.0.1", port=0, database=str(tmp_path / "loops.db"), **settings)
    app = await App.start(config, _registry())
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            yield app, channel
    finally:
        for spin in SPINS.values():
            spin.release.set()
        await app.stop(grace=0)
        SPINS.clear()


async def spinning_run(
    stubs: Stubs, graph: str, name: str, spin_file: Path | None = None
) -> run_pb2.Run:
    """A run of `graph` on a new thread, once its graph spins (which it also says in
    `spin_file`, with its thread, run and graph ids)."""
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    spin = spin_of(name)
    spin_input: dict[str, Any] = {"spin": name}
    if spin_file is not None:
        spin_input["spin_file"] = str(spin_file)
    created = await stubs.runs.CreateRun(
        run_service_pb2.CreateRunRequest(
            thread_id=thread.thread.thread_id, assistant_id=graph, input=struct(spin_input)
        ),
        timeout=DEADLINE,
    )
    assert await asyncio.to_thread(spin.spinning.wait, SPIN_BOUND), "the graph spins"
    run: run_pb2.Run = created.run
    return run


async def join(stubs: Stubs, run: run_pb2.Run) -> run_service_pb2.JoinRunResponse:
    response: run_service_pb2.JoinRunResponse = await stubs.runs.JoinRun(
        run_service_pb2.JoinRunRequest(thread_id=run.thread_id, run_id=run.run_id),
        timeout=SPIN_BOUND,
    )
    return response


@pytest.mark.parametrize("graph", ["spinning", "lg_spinning"])
async def test_health_reads_admission_and_cancellation_answer_while_a_graph_computes(
    tmp_path: Path, graph: str
) -> None:
    """The calls come from a client in a process of its own (`tests/api_probe.py`), started
    before the run, so that they are made while the graph computes whatever the server's
    loop does."""
    spin_file = tmp_path / "api.spinning"
    async with serving(tmp_path) as (app, channel):
        stubs = Stubs(channel)
        spin = spin_of("api")
        probe = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.api_probe",
            app.address,
            str(spin_file),
            str(DEADLINE),
            stdout=asyncio.subprocess.PIPE,
            cwd=str(Path(__file__).parent.parent),
        )
        try:
            run = await spinning_run(stubs, graph, "api", spin_file)
            output, _ = await asyncio.wait_for(probe.communicate(), SPIN_BOUND)
        finally:
            spin.release.set()
            if probe.returncode is None:
                probe.kill()
                await probe.wait()
        seen = json.loads(output)
        assert probe.returncode == 0, seen
        assert seen == {
            "health": "SERVING",
            "thread_status": thread_pb2.THREAD_STATUS_BUSY,
            "rejected": "THREAD_BUSY",
            "cancelled": True,
        }
        ended = await join(stubs, run)
        # Cancelled while it computed: the cancellation reached it at its next await.
        assert ended.run.status == run_pb2.RUN_STATUS_INTERRUPTED
        assert spin.threads and all(t.startswith("turnstile-graphs") for t in spin.threads)


async def test_an_interrupting_run_starts_once_the_spinning_run_reaches_an_await(
    tmp_path: Path,
) -> None:
    """Two graph loops: a run that started beside the spinning one would run at once (and
    overlap it in the step log); it must wait until the spinning run has unwound."""
    async with serving(tmp_path, graph_threads=2) as (_, channel):
        stubs = Stubs(channel)
        spin = spin_of("first")
        try:
            first = await spinning_run(stubs, "spinning", "first")
            # Admitted at once (CreateRun answers), started only once the first has unwound.
            second = await stubs.runs.CreateRun(
                run_service_pb2.CreateRunRequest(
                    thread_id=first.thread_id,
                    assistant_id="recording",
                    input=struct({"steps": 1}),
                    multitask_strategy=run_pb2.MULTITASK_STRATEGY_INTERRUPT,
                ),
                timeout=DEADLINE,
            )
            assert support.STEPS.steps == 1, "the new run waits for the spinning one"
            still = await stubs.runs.GetRun(
                run_service_pb2.GetRunRequest(thread_id=first.thread_id, run_id=first.run_id),
                timeout=DEADLINE,
            )
            assert still.run.status == run_pb2.RUN_STATUS_RUNNING
        finally:
            spin.release.set()
        ended = await join(stubs, first)
        assert ended.run.status == run_pb2.RUN_STATUS_INTERRUPTED
        assert ended.run.superseded_by == second.run.run_id
        # Its step after the await was discarded: the thread has the input and the new run's.
        done = await join(stubs, second.run)
        assert done.run.status == run_pb2.RUN_STATUS_SUCCESS
        contents = [m["content"] for m in _plain(done.values)["messages"]]
        assert "spun" not in contents
        assert support.STEPS.overlaps == []


async def test_a_graph_loop_run_streams_and_checkpoints_as_before(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, channel):
        stubs = Stubs(channel)
        spin = spin_of("whole")
        try:
            run = await spinning_run(stubs, "spinning", "whole")
        finally:
            spin.release.set()
        ended = await join(stubs, run)
        assert ended.run.status == run_pb2.RUN_STATUS_SUCCESS
        assert [m["content"] for m in _plain(ended.values)["messages"]] == ["spun"]


async def test_stop_waits_for_a_spinning_graph_and_leaves_its_run_to_resume(
    tmp_path: Path,
) -> None:
    config = ServerConfig(host="127.0.0.1", port=0, database=str(tmp_path / "stop.db"))
    app = await App.start(config, _registry())
    spin = spin_of("stop")
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            run = await spinning_run(Stubs(channel), "spinning", "stop")
        stopping = asyncio.create_task(app.stop(grace=0))
    finally:
        spin.release.set()
    await asyncio.wait_for(stopping, SPIN_BOUND)
    restarted = await App.start(config, _registry())
    try:
        async with grpc.aio.insecure_channel(restarted.address) as channel:
            resumed = await join(Stubs(channel), run)
        assert resumed.run.status == run_pb2.RUN_STATUS_SUCCESS
        assert resumed.run.attempt == 2
    finally:
        await restarted.stop(grace=0)
        SPINS.clear()


def _plain(values: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    plain: dict[str, Any] = json_format.MessageToDict(values)
    return plain


async def many_steps(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Yields input `steps` updates without awaiting."""
    for index in range(int(ctx.input["steps"])):
        yield {"step": index}


async def test_an_exit_run_writes_its_held_steps_in_bounded_writes_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """600 held steps go in writes of at most 256 (one write of them all would hold the
    store's writer, and the admissions behind it), every one stored, in order."""
    graphs = _registry()
    graphs.register("many_steps", many_steps)
    config = ServerConfig(host="127.0.0.1", port=0, database=str(tmp_path / "exit.db"))
    async with support.client_of(config, graphs) as (app, client):
        checkpoints = app.store.checkpoints
        submit = checkpoints.submit
        sizes: list[int] = []

        def counted(thread_id: str, run_id: str, steps: list[Any], **kwargs: Any) -> Any:
            sizes.append(len(steps))
            return submit(thread_id, run_id, steps, **kwargs)

        monkeypatch.setattr(checkpoints, "submit", counted)
        thread = await client.threads.create()
        run = await client.runs.create(
            thread["thread_id"], "many_steps", input={"steps": 600}, durability="exit"
        )
        await client.runs.join(thread["thread_id"], run["run_id"])
        assert (await client.runs.get(thread["thread_id"], run["run_id"]))["status"] == "success"
        assert sizes == [256, 256, 88]
        history = await client.threads.get_history(thread["thread_id"], limit=1000)
        steps = [h["values"].get("step") for h in reversed(history)]
        assert steps == [None, *range(600)]  # the input, then each step in order
