"""B9: the SDK against the generated stub on long threads, call by call, taking turns.

Each call is made twice in a row, once through the SDK (which returns plain dicts) and once
through the raw stub (which returns the parsed protobuf and decodes nothing), on threads of
`b9_sizes` messages; the ratio of their p50s is what the SDK's decoding costs.
"""

from __future__ import annotations

import math
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from turnstile import TurnstileClient, get_client
from turnstile.v1 import run_pb2, run_service_pb2, thread_service_pb2
from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.load import (
    CALL_SECONDS,
    UPDATES,
    Channels,
    Stubs,
    check_run,
    human,
    new_thread,
    struct,
    wait_request,
)
from turnstile_tools.bench.sizes import Sizes

OPERATIONS = ("wait", "join", "get_state", "get_history", "stream")
RUNS_PER_THREAD = 5
"""Runs (each adds two messages) a thread takes before the next one of its size is used."""
GROW_BATCH = 500
TARGETS = {200: 1.1, 2000: 1.3}
"""Thread size -> the highest SDK / stub ratio allowed there."""

Call = Callable[[], Awaitable[Any]]


async def sdk_against_stub(channels: Channels, address: str, sizes: Sizes) -> Figures:
    """B9: p50 of each operation through the SDK and the stub, by thread size."""
    stubs = channels.stubs(0)
    client = get_client(url=address)
    figures: Figures = {}
    try:
        for size in sizes.b9_sizes():
            turns = sizes.warmup // 4 + sizes.b9_calls
            threads = [
                (await _grown(stubs, size))[0] for _ in range(math.ceil(turns / RUNS_PER_THREAD))
            ]
            reader = await _grown(stubs, size)  # for the reads: no run of the bench grows it
            for operation in OPERATIONS:
                pairs = _pairs(operation, client, stubs, threads, reader)
                sdk, raw = await _in_turns(pairs, sizes.warmup // 4, sizes.b9_calls)
                figures[f"{operation}_{size}_sdk"] = sdk
                figures[f"{operation}_{size}_stub"] = raw
                figures[f"{operation}_{size}_ratio"] = sdk / raw
    finally:
        await client.close()
    figures["met"] = all(
        figures[f"{operation}_{size}_ratio"] <= limit
        for operation in OPERATIONS
        for size, limit in TARGETS.items()
        if size in sizes.b9_sizes()
    )
    return figures


def thread_sizes(figures: Figures) -> list[int]:
    """The thread sizes B9's figures hold, smallest first."""
    return sorted({int(key.split("_")[1]) for key in figures if key.startswith("wait_")})


async def _grown(stubs: Stubs, size: int) -> tuple[str, str]:
    """A new thread of `size` messages (an `echo` run makes two, `bench_grow` the rest), and
    the id of the run that wrote its last checkpoint."""
    thread_id = await new_thread(stubs)
    request = wait_request(thread_id, "echo", human("hello"))
    run = (await stubs.runs.WaitRun(request, timeout=CALL_SECONDS)).run
    if size > 2:
        grow = {"grow": size - 2, "batch": GROW_BATCH}
        request = wait_request(thread_id, "bench_grow", grow, stream_mode=[UPDATES])
        run = (await stubs.runs.WaitRun(request, timeout=CALL_SECONDS)).run
    check_run(run)
    return thread_id, run.run_id


def _pairs(
    operation: str,
    client: TurnstileClient,
    stubs: Stubs,
    threads: list[str],
    reader: tuple[str, str],
) -> Callable[[int], tuple[Call, Call]]:
    """The SDK call and the stub call of `operation`, for the `index`th turn."""
    values = [run_pb2.STREAM_MODE_VALUES]

    def pair(index: int) -> tuple[Call, Call]:
        # Runs grow their thread: a thread takes RUNS_PER_THREAD turns, then the next one.
        thread_id = threads[min(index // RUNS_PER_THREAD, len(threads) - 1)]
        message = human(f"hello {index}")
        # The SDK sends an idempotency key with every run; so does the stub, for the same work.
        key = str(uuid.uuid4())
        if operation == "wait":
            return (
                lambda: client.runs.wait(thread_id, "echo", input=message),
                lambda: stubs.runs.WaitRun(
                    wait_request(thread_id, "echo", message, request_id=key),
                    timeout=CALL_SECONDS,
                ),
            )
        if operation == "stream":

            async def sdk_stream() -> None:
                async for _ in client.runs.stream(
                    thread_id, "echo", input=message, stream_mode="values"
                ):
                    pass

            async def stub_stream() -> None:
                request = run_service_pb2.StreamRunRequest(
                    thread_id=thread_id, assistant_id="echo", input=struct(message), request_id=key
                )
                request.stream_mode.extend(values)
                async for _ in stubs.runs.StreamRun(request, timeout=CALL_SECONDS):
                    pass

            return sdk_stream, stub_stream
        thread_id, run_id = reader
        if operation == "join":
            join = run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=run_id)
            return (
                lambda: client.runs.join(thread_id, run_id),
                lambda: stubs.runs.JoinRun(join, timeout=CALL_SECONDS),
            )
        if operation == "get_state":
            return (
                lambda: client.threads.get_state(thread_id),
                lambda: stubs.threads.GetThreadState(
                    thread_service_pb2.GetThreadStateRequest(thread_id=thread_id),
                    timeout=CALL_SECONDS,
                ),
            )
        return (
            lambda: client.threads.get_history(thread_id, limit=10),
            lambda: stubs.threads.GetThreadHistory(
                thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id, page_size=10),
                timeout=CALL_SECONDS,
            ),
        )

    return pair


async def _in_turns(
    pairs: Callable[[int], tuple[Call, Call]], warmup: int, calls: int
) -> tuple[float, float]:
    """p50 of the SDK calls and of the stub calls, made one after the other, in turns."""
    sdk: list[float] = []
    raw: list[float] = []
    for index in range(warmup + calls):
        first, second = pairs(index)
        for call, samples in ((first, sdk), (second, raw)):
            started = time.perf_counter()
            await call()
            if index >= warmup:
                samples.append(time.perf_counter() - started)
    return statistics.median(sdk), statistics.median(raw)
