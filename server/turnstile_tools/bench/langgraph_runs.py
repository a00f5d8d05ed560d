"""B10 and B11: a trivial two-node StateGraph served, against the same graph in process.

B10: Turnstile serves the graph (`--config` on the bench's langgraph.json, durable checkpoints
in its SQLite file) and is called with `WaitRun`, serially and by `lg_clients` callers; the
same graph runs in this process with `ainvoke` on `AsyncSqliteSaver` (a file), `InMemorySaver`
and no checkpointer. The serial runs take turns, 25 of each subject at a time (a fresh thread
every 25), so that all see the same background load; the concurrent phases follow one another.
The serial turns include the floor: the native `echo` graph served by the same server (what a
served run of the same shape costs without LangGraph: gRPC, admission and start, two steps
each written before the next, the end), with its server CPU.

B11: the same graphs served by `langgraph dev` (langgraph-api's in-memory server, from another
environment: `--langgraph-dev PATH`), called with `langgraph_sdk`: `runs.wait` serially and by
`lg_clients` callers, and the interrupt handoff (a run waiting in its step, then
`runs.create(multitask_strategy="interrupt")` + `runs.join` of the new run); the handoff is
measured on Turnstile too, with the same graphs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from turnstile.v1 import run_service_pb2
from turnstile_tools.bench.langgraph_graphs import SLEEPER, TWO_NODE, two_node_graph
from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.load import (
    CALL_SECONDS,
    INTERRUPT,
    INTERRUPTED,
    Channels,
    Latency,
    check_run,
    create_request,
    human,
    new_thread,
    struct,
    wait_request,
)
from turnstile_tools.bench.sizes import Sizes

SERVED, SQLITE, MEMORY, NONE = "served", "sqlite", "memory", "none"
NATIVE = "native"
"""The floor: the native `echo` graph served by the same server (no LangGraph; its two steps
written durably, as B10's two nodes are), in the same serial turns."""
SUBJECTS = (SERVED, SQLITE, MEMORY, NONE)
ON_SERVER = (SERVED, NATIVE)
INPUT = {"topic": "bench"}

Run = Callable[[str], Awaitable[Any]]
"""One run of a subject on a thread (the run happens when awaited)."""


@asynccontextmanager
async def in_process(directory: Path) -> AsyncIterator[dict[str, Run]]:
    """The two-node graph compiled three ways in this process, as runs on a thread."""
    async with AsyncExitStack() as stack:
        saver = await stack.enter_async_context(
            AsyncSqliteSaver.from_conn_string(str(directory / "langgraph-inprocess.db"))
        )
        sqlite = two_node_graph().compile(checkpointer=saver)
        memory = two_node_graph().compile(checkpointer=InMemorySaver())
        alone: Any = two_node_graph().compile()

        def on(graph: Any) -> Run:
            return lambda thread: graph.ainvoke(INPUT, {"configurable": {"thread_id": thread}})

        yield {SQLITE: on(sqlite), MEMORY: on(memory), NONE: lambda _: alone.ainvoke(INPUT)}


def served(
    channels: Channels,
    index: int = 0,
    assistant: str = TWO_NODE,
    payload: dict[str, Any] | None = None,
) -> Run:
    """WaitRun of the two-node graph (or `assistant`) on Turnstile, through channel `index`."""
    stubs = channels.stubs(index)
    request_input = INPUT if payload is None else payload

    async def run(thread: str) -> None:
        response = await stubs.runs.WaitRun(
            wait_request(thread, assistant, request_input), timeout=CALL_SECONDS
        )
        check_run(response.run)

    return run


async def turnstile_b10(
    channels: Channels, sizes: Sizes, directory: Path, cpu: Callable[[], float]
) -> Figures:
    """B10's figures: per subject, serial p50 and mean, and the rate of `lg_clients` callers;
    the server's CPU per run, the in-process subjects' own CPU per run."""
    async with in_process(directory) as local:
        native = served(channels, assistant="echo", payload=human("bench"))
        subjects = {SERVED: served(channels), NATIVE: native, **local}
        figures = await _serial(subjects, sizes, channels, cpu)
        stubs = channels.stubs(0)
        blocks = math.ceil(sizes.lg_runs_per_client / sizes.runs_per_thread)
        for name, run in subjects.items():
            if name == NATIVE:
                continue  # the floor is a serial figure
            if name == SERVED:
                callers = [served(channels, i) for i in range(sizes.lg_clients)]
                threads = [
                    [await new_thread(channels.stubs(i)) for _ in range(blocks)]
                    for i in range(sizes.lg_clients)
                ]
            else:
                callers = [run] * sizes.lg_clients
                threads = [
                    [f"{name}-c{i}-{b}" for b in range(blocks)] for i in range(sizes.lg_clients)
                ]
            used, own = cpu(), time.process_time()
            rate = await _concurrent(callers, threads, sizes)
            total = sizes.lg_clients * sizes.lg_runs_per_client
            figures[f"{name}_rate"] = rate
            if name == SERVED:
                figures["served_cpu_concurrent"] = (cpu() - used) / total
            else:
                figures[f"{name}_cpu_concurrent"] = (time.process_time() - own) / total
        del stubs
    return figures


async def _serial(
    subjects: dict[str, Run], sizes: Sizes, channels: Channels, cpu: Callable[[], float]
) -> Figures:
    total = sizes.warmup + sizes.lg_runs
    blocks = math.ceil(total / sizes.runs_per_thread)
    stubs = channels.stubs(0)
    served_threads = {
        name: [await new_thread(stubs) for _ in range(blocks)]
        for name in subjects
        if name in ON_SERVER
    }
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    own_cpu: dict[str, float] = dict.fromkeys(subjects, 0.0)
    server_cpu: dict[str, float] = dict.fromkeys(served_threads, 0.0)
    for first in range(0, total, sizes.runs_per_thread):
        block = first // sizes.runs_per_thread
        for name, run in subjects.items():
            on_server = name in served_threads
            thread = served_threads[name][block] if on_server else f"{name}-s{block}"
            for index in range(first, min(total, first + sizes.runs_per_thread)):
                used, own = cpu() if on_server else 0.0, time.process_time()
                started = time.perf_counter()
                await run(thread)
                elapsed = time.perf_counter() - started
                if index >= sizes.warmup:
                    samples[name].append(elapsed)
                    own_cpu[name] += time.process_time() - own
                    if on_server:
                        server_cpu[name] += cpu() - used
    figures: Figures = {"runs": sizes.lg_runs, "clients": sizes.lg_clients}
    for name, timings in samples.items():
        latency = Latency.of(timings)
        figures[f"{name}_p50"] = latency.p50
        figures[f"{name}_mean"] = sum(timings) / len(timings)
        figures[f"{name}_cpu"] = own_cpu[name] / len(timings)
    for name, used in server_cpu.items():
        figures[f"{name}_server_cpu" if name != SERVED else "served_cpu"] = used / sizes.lg_runs
    return figures


async def _concurrent(callers: list[Run], threads: list[list[str]], sizes: Sizes) -> float:
    """Runs per second of `callers`, each `lg_runs_per_client` runs on its own threads."""

    async def caller(index: int, count: int, offset: int) -> None:
        for number in range(offset, offset + count):
            await callers[index](threads[index][number // sizes.runs_per_thread])

    warm = min(2, sizes.lg_runs_per_client)
    await asyncio.gather(*(caller(i, warm, 0) for i in range(len(callers))))
    started = time.perf_counter()
    await asyncio.gather(*(caller(i, sizes.lg_runs_per_client, 0) for i in range(len(callers))))
    return len(callers) * sizes.lg_runs_per_client / (time.perf_counter() - started)


async def turnstile_handoff(channels: Channels, sizes: Sizes) -> Figures:
    """B4 on the LangGraph graphs: a sleeper run waiting in its step, then CreateRun(interrupt)
    of the two-node graph + JoinRun of it, timed together; the old run must end interrupted."""
    stubs = channels.stubs(0)
    samples: list[float] = []
    total = sizes.warmup + sizes.lg_handoffs
    for index in range(total):
        thread = await new_thread(stubs)
        sleeping = await _sleeping(stubs, thread)
        started = time.perf_counter()
        created = await stubs.runs.CreateRun(
            create_request(thread, TWO_NODE, INPUT, multitask_strategy=INTERRUPT),
            timeout=CALL_SECONDS,
        )
        joined = await stubs.runs.JoinRun(
            run_service_pb2.JoinRunRequest(thread_id=thread, run_id=created.run.run_id),
            timeout=CALL_SECONDS,
        )
        elapsed = time.perf_counter() - started
        check_run(joined.run)
        old = await stubs.runs.GetRun(
            run_service_pb2.GetRunRequest(thread_id=thread, run_id=sleeping), timeout=CALL_SECONDS
        )
        check_run(old.run, INTERRUPTED)
        if index >= sizes.warmup:
            samples.append(elapsed)
    latency = Latency.of(samples)
    return {"handoff_p50": latency.p50, "handoff_p99": latency.p99}


async def _sleeping(stubs: Any, thread: str) -> str:
    """Starts a sleeper run; returns its id once it is RUNNING (its input checkpoint written:
    the `values` event of the input comes right before the node's await)."""
    call = stubs.runs.StreamRun(
        run_service_pb2.StreamRunRequest(
            thread_id=thread, assistant_id=SLEEPER, input=struct({"seconds": 3600})
        ),
        timeout=CALL_SECONDS,
    )
    run_id = ""
    try:
        async for message in call:
            if message.HasField("run"):
                run_id = message.run.run_id
            if any(event.event in ("values", "updates") for event in message.events):
                return run_id
    finally:
        call.cancel()
    raise RuntimeError(f"the stream of sleeping run {run_id} ended before the run started")
