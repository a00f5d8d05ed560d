"""The unary workloads: the echo baseline, and B1-B4 (WaitRun, enqueue, interrupt)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import json_format

from turnstile.v1 import run_service_pb2, thread_service_pb2
from turnstile_tools.bench.echo_server import CALL
from turnstile_tools.bench.load import (
    CALL_SECONDS,
    ENQUEUE,
    INTERRUPT,
    INTERRUPTED,
    SUCCESS,
    Channels,
    Latency,
    Stubs,
    check_run,
    create_request,
    human,
    new_thread,
    struct,
    wait_request,
)
from turnstile_tools.bench.sizes import Sizes

Figures = dict[str, Any]
"""A workload's measurements by name (seconds, counts, rates per second, flags)."""

ECHO_PAYLOAD = b"x" * 256
"""About the size of a WaitRun request and its answer for the echo graph."""


async def echo_baseline(
    channels: Channels, sizes: Sizes, cpu: Callable[[], float] | None = None
) -> Figures:
    """The raw gRPC figures: serial call latency and the rate of `echo_clients` callers, and
    with `cpu` (the echo server's CPU seconds so far) the server's CPU per concurrent call."""
    methods = [channel.unary_unary(CALL) for channel in channels.raw]
    serial = methods[0]
    for _ in range(sizes.warmup * 10):
        await serial(ECHO_PAYLOAD, timeout=CALL_SECONDS)
    samples: list[float] = []
    for _ in range(sizes.echo_calls):
        started = time.perf_counter()
        await serial(ECHO_PAYLOAD, timeout=CALL_SECONDS)
        samples.append(time.perf_counter() - started)
    latency = Latency.of(samples)

    async def caller(index: int, calls: int) -> None:
        method = methods[index % len(methods)]
        for _ in range(calls):
            await method(ECHO_PAYLOAD, timeout=CALL_SECONDS)

    clients = sizes.echo_clients
    await asyncio.gather(*(caller(i, sizes.warmup) for i in range(clients)))
    started, used = time.perf_counter(), cpu() if cpu else 0.0
    await asyncio.gather(*(caller(i, sizes.echo_calls_per_client) for i in range(clients)))
    elapsed = time.perf_counter() - started
    figures: Figures = {
        "p50": latency.p50,
        "p99": latency.p99,
        "calls": latency.samples,
        "clients": clients,
        "rate": clients * sizes.echo_calls_per_client / elapsed,
    }
    if cpu:
        figures["cpu_per_call"] = (cpu() - used) / (clients * sizes.echo_calls_per_client)
    return figures


async def _threads(stubs: Stubs, count: int) -> list[str]:
    return [await new_thread(stubs) for _ in range(count)]


Call = Callable[[int, int], Awaitable[Any]]
"""Prepares one timed call of a turn, given its block and index (the call runs when awaited)."""


async def serial_wait(servers: list[Channels], sizes: Sizes, runs: int) -> list[Figures]:
    """B6: B1's WaitRuns of `echo`, one after another, each waited for, on each of `servers`.

    It takes turns between the servers, one thread's worth of runs each, so that they are
    compared under the same background load. (B1 itself takes turns with raw echo calls:
    `serial_wait_and_echo`.)
    """
    blocks = math.ceil((sizes.warmup + runs) / sizes.runs_per_thread)
    calls = [await _echo_runs(channels.stubs(0), blocks) for channels in servers]
    return [
        {"p50": latency.p50, "p99": latency.p99, "runs": latency.samples}
        for latency in await _in_turns(calls, sizes, runs)
    ]


async def serial_wait_and_echo(channels: Channels, echo: Channels, sizes: Sizes) -> Figures:
    """B1: WaitRun of `echo` one after another, taking turns with as many raw echo calls,
    `runs_per_thread` of each at a time: the ratio compares the two under the same background
    load (the machine's load drifts between a baseline taken first and a workload later)."""
    blocks = math.ceil((sizes.warmup + sizes.b1_runs) / sizes.runs_per_thread)
    method = echo.raw[0].unary_unary(CALL)

    async def echo_call() -> None:
        await method(ECHO_PAYLOAD, timeout=CALL_SECONDS)

    runs, calls = await _in_turns(
        [await _echo_runs(channels.stubs(0), blocks), lambda block, index: echo_call()],
        sizes,
        sizes.b1_runs,
    )
    return {
        "p50": runs.p50,
        "p99": runs.p99,
        "runs": runs.samples,
        "echo_p50": calls.p50,
        "echo_p99": calls.p99,
    }


async def _echo_runs(stubs: Stubs, blocks: int) -> Call:
    """WaitRuns of `echo`, a fresh thread for each block; each must succeed."""
    threads = await _threads(stubs, blocks)

    async def waited(request: run_service_pb2.WaitRunRequest) -> None:
        check_run((await stubs.runs.WaitRun(request, timeout=CALL_SECONDS)).run)

    return lambda block, index: waited(
        wait_request(threads[block], "echo", human(f"hello {index}"))
    )


async def _in_turns(turns: list[Call], sizes: Sizes, runs: int) -> list[Latency]:
    """Times `warmup + runs` calls of each turn, one after another, taking turns
    `runs_per_thread` calls at a time; the warmup calls are left out of the latencies."""
    total = sizes.warmup + runs
    samples: list[list[float]] = [[] for _ in turns]
    for first in range(0, total, sizes.runs_per_thread):
        block = first // sizes.runs_per_thread
        for prepare, timings in zip(turns, samples, strict=True):
            for index in range(first, min(total, first + sizes.runs_per_thread)):
                call = prepare(block, index)
                started = time.perf_counter()
                await call
                elapsed = time.perf_counter() - started
                if index >= sizes.warmup:
                    timings.append(elapsed)
    return [Latency.of(timings) for timings in samples]


async def concurrent_wait(
    channels: Channels, sizes: Sizes, cpu: Callable[[], float] | None = None
) -> Figures:
    """B2: `b2_clients` clients, each on its own threads, WaitRun in a loop; with `cpu` (the
    server's CPU seconds so far), the server's CPU per run."""
    clients, per_client = sizes.b2_clients, sizes.b2_runs_per_client
    pools = [
        await _threads(channels.stubs(i), math.ceil((per_client + 2) / sizes.runs_per_thread))
        for i in range(clients)
    ]
    samples: list[float] = []

    async def client(index: int, first: int, runs: int) -> None:
        stubs, pool = channels.stubs(index), pools[index]
        for number in range(first, first + runs):
            thread_id = pool[number // sizes.runs_per_thread]
            request = wait_request(thread_id, "echo", human(f"hello {number}"))
            started = time.perf_counter()
            response = await stubs.runs.WaitRun(request, timeout=CALL_SECONDS)
            samples.append(time.perf_counter() - started)
            check_run(response.run)

    await asyncio.gather(*(client(i, 0, 2) for i in range(clients)))
    samples.clear()
    started, used = time.perf_counter(), cpu() if cpu else 0.0
    await asyncio.gather(*(client(i, 2, per_client) for i in range(clients)))
    elapsed = time.perf_counter() - started
    latency = Latency.of(samples)
    figures: Figures = {
        "rate": clients * per_client / elapsed,
        "runs": clients * per_client,
        "clients": clients,
        "p50": latency.p50,
        "p99": latency.p99,
    }
    if cpu:
        figures["cpu_per_run"] = (cpu() - used) / (clients * per_client)
    return figures


async def enqueue_order(
    channels: Channels, sizes: Sizes, cpu: Callable[[], float] | None = None
) -> Figures:
    """B3: on each of `b3_threads` threads, `b3_runs_per_thread` enqueued runs back to back;
    with `cpu` (the server's CPU seconds so far), the server's CPU per run."""
    width, depth = sizes.b3_threads, sizes.b3_runs_per_thread
    total_runs, total_seconds, total_cpu, kept = 0, 0.0, 0.0, True
    for _ in range(sizes.b3_rounds):
        threads = [await new_thread(channels.stubs(i)) for i in range(width)]
        started, used = time.perf_counter(), cpu() if cpu else 0.0
        await asyncio.gather(
            *(_enqueue(channels.stubs(i), thread_id, depth) for i, thread_id in enumerate(threads))
        )
        total_seconds += time.perf_counter() - started
        total_cpu += cpu() - used if cpu else 0.0
        total_runs += width * depth
        for index, thread_id in enumerate(threads):
            kept = kept and await _in_order(channels.stubs(index), thread_id, depth)
    figures: Figures = {
        "rate": total_runs / total_seconds,
        "runs": total_runs,
        "order_kept": kept,
    }
    if cpu:
        figures["cpu_per_run"] = total_cpu / total_runs
    return figures


async def _enqueue(stubs: Stubs, thread_id: str, depth: int) -> None:
    """Creates `depth` enqueued runs back to back, then joins the last one."""
    requests = [
        create_request(thread_id, "echo", human(str(k)), multitask_strategy=ENQUEUE)
        for k in range(depth)
    ]
    last = ""
    for request in requests:
        last = (await stubs.runs.CreateRun(request, timeout=CALL_SECONDS)).run.run_id
    joined = await stubs.runs.JoinRun(
        run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=last), timeout=CALL_SECONDS
    )
    check_run(joined.run)


async def _in_order(stubs: Stubs, thread_id: str, depth: int) -> bool:
    """Whether the thread holds each run's message and its echo, in admission order."""
    state = await stubs.threads.GetThreadState(
        thread_service_pb2.GetThreadStateRequest(thread_id=thread_id), timeout=CALL_SECONDS
    )
    values = json_format.MessageToDict(state.checkpoint.values)
    contents = [(m.get("type"), m.get("content")) for m in values.get("messages", [])]
    expected = [(kind, str(k)) for k in range(depth) for kind in ("human", "ai")]
    runs = await stubs.runs.ListRuns(
        run_service_pb2.ListRunsRequest(thread_id=thread_id, page_size=depth + 1),
        timeout=CALL_SECONDS,
    )
    succeeded = all(run.status == SUCCESS for run in runs.runs)
    return contents == expected and succeeded and len(runs.runs) == depth


async def interrupt_join(channels: Channels, sizes: Sizes) -> Figures:
    """B4: a run waits in a step; CreateRun(interrupt) then JoinRun of the new run."""
    stubs = channels.stubs(0)
    total = sizes.warmup + sizes.b4_iterations
    threads = await _threads(stubs, math.ceil(total / sizes.runs_per_thread))
    samples: list[float] = []
    for index in range(total):
        thread_id = threads[index // sizes.runs_per_thread]
        sleeping = await sleeping_run(stubs, thread_id)
        request = create_request(thread_id, "echo", human("hi"), multitask_strategy=INTERRUPT)
        started = time.perf_counter()
        created = await stubs.runs.CreateRun(request, timeout=CALL_SECONDS)
        joined = await stubs.runs.JoinRun(
            run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=created.run.run_id),
            timeout=CALL_SECONDS,
        )
        elapsed = time.perf_counter() - started
        check_run(joined.run)
        old = await stubs.runs.GetRun(
            run_service_pb2.GetRunRequest(thread_id=thread_id, run_id=sleeping),
            timeout=CALL_SECONDS,
        )
        check_run(old.run, INTERRUPTED)
        if index >= sizes.warmup:
            samples.append(elapsed)
    latency = Latency.of(samples)
    return {"p50": latency.p50, "p99": latency.p99, "iterations": latency.samples}


async def sleeping_run(stubs: Stubs, thread_id: str) -> str:
    """Starts a `bench_sleep` run; returns its id once its graph waits in its step.

    The run's `values` event for its input is the last thing before the graph's await, so
    once it arrives the run is waiting in the step.
    """
    call = stubs.runs.StreamRun(
        run_service_pb2.StreamRunRequest(
            thread_id=thread_id, assistant_id="bench_sleep", input=struct({"seconds": 3600})
        ),
        timeout=CALL_SECONDS,
    )
    run_id = ""
    try:
        async for message in call:
            if message.HasField("run"):
                run_id = message.run.run_id
            if any(event.event == "values" for event in message.events):
                return run_id
    finally:
        call.cancel()
    raise RuntimeError(f"the stream of sleeping run {run_id} ended before the run started")
