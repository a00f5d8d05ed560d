"""The size workloads: B7 (memory with queued runs) and B8 (one thread grown long)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from turnstile_tools.bench.latency import Figures
from turnstile_tools.bench.load import (
    CALL_SECONDS,
    ENQUEUE,
    PENDING,
    UPDATES,
    Channels,
    check_run,
    create_request,
    human,
    new_thread,
    run_seconds,
    wait_request,
)
from turnstile_tools.bench.processes import TurnstileProcess
from turnstile_tools.bench.sizes import Sizes

GROW_BATCH = 500
"""Messages the `bench_grow` graph appends per step."""
CHECKPOINTS_PER_ECHO_RUN = 3
"""An `echo` run writes its input and two steps."""
TURN = 5
"""B8: echo runs on one thread before the other thread's turn."""


async def queued_memory(server: TurnstileProcess, channels: Channels, sizes: Sizes) -> Figures:
    """B7: on each of `b7_threads` threads a waiting run and `b7_runs_per_thread` queued."""
    idle = server.memory()["VmRSS"]
    threads = [await new_thread(channels.stubs(i)) for i in range(sizes.b7_threads)]
    queued = 0

    async def thread(index: int) -> None:
        nonlocal queued
        stubs, thread_id = channels.stubs(index), threads[index]
        sleeping = create_request(thread_id, "bench_sleep", {"seconds": 3600})
        await stubs.runs.CreateRun(sleeping, timeout=CALL_SECONDS)
        for number in range(sizes.b7_runs_per_thread):
            request = create_request(
                thread_id, "echo", human(f"queued {number}"), multitask_strategy=ENQUEUE
            )
            response = await stubs.runs.CreateRun(request, timeout=CALL_SECONDS)
            queued += response.run.status == PENDING

    started = time.perf_counter()
    await asyncio.gather(*(thread(i) for i in range(sizes.b7_threads)))
    elapsed = time.perf_counter() - started
    memory = server.memory()
    return {
        "rss": memory["VmRSS"],
        "peak_rss": memory["VmHWM"],
        "idle_rss": idle,
        "queued": queued,
        "admit_rate": sizes.b7_threads * (sizes.b7_runs_per_thread + 1) / elapsed,
    }


async def long_thread(channels: Channels, sizes: Sizes, database: Path) -> Figures:
    """B8: echo runs on a thread of `b8_small` messages and on one of `b8_large`, in turns.

    Step cost is the server's own time per checkpointed step (the run's `end_time -
    start_time` over its input and two steps); growth is the database's bytes in use, per step.
    Both are measured with the default stream mode (`values`, which encodes the whole state
    after each step) and with `updates` (only the step's update). The two sizes take turns,
    `TURN` runs at a time, so that both see the same server: measured one after the other, the
    later phase also pays for whatever the server and its database accumulated meanwhile.
    """
    stubs = channels.stubs(0)
    figures: Figures = {}
    for mode in ("values", "updates"):
        threads = {"small": await new_thread(stubs), "large": await new_thread(stubs)}
        await _grow(channels, threads["small"], sizes.b8_small)
        await _grow(channels, threads["large"], sizes.b8_large)
        server: dict[str, list[float]] = {"small": [], "large": []}
        client: dict[str, list[float]] = {"small": [], "large": []}
        added = {"small": 0, "large": 0}
        done = 0
        while done < sizes.b8_runs:
            turn = min(TURN, sizes.b8_runs - done)
            for label, thread_id in threads.items():
                times, waits, grown = await _echo_runs(channels, database, thread_id, turn, mode)
                server[label] += times
                client[label] += waits
                added[label] += grown
            done += turn
        steps = sizes.b8_runs * CHECKPOINTS_PER_ECHO_RUN
        for label in threads:
            figures[f"{label}_{mode}_step"] = _median(server[label]) / CHECKPOINTS_PER_ECHO_RUN
            figures[f"{label}_{mode}_growth"] = added[label] / steps
            figures[f"{label}_{mode}_wait_p50"] = _median(client[label])
    for mode in ("values", "updates"):
        for key in ("step", "growth"):
            small = figures[f"small_{mode}_{key}"]
            figures[f"{mode}_{key}_ratio"] = figures[f"large_{mode}_{key}"] / small if small else 0
    figures["small"] = sizes.b8_small
    figures["large"] = sizes.b8_large
    return figures


async def _grow(channels: Channels, thread_id: str, messages: int) -> None:
    if messages <= 0:
        return
    request = wait_request(
        thread_id, "bench_grow", {"grow": messages, "batch": GROW_BATCH}, stream_mode=[UPDATES]
    )
    response = await channels.stubs(0).runs.WaitRun(request, timeout=CALL_SECONDS)
    check_run(response.run)


async def _echo_runs(
    channels: Channels, database: Path, thread_id: str, runs: int, mode: str
) -> tuple[list[float], list[float], int]:
    """Runs `echo` `runs` times; returns each run's server time and client time, and the
    database bytes the runs added."""
    stubs = channels.stubs(0)
    modes = [UPDATES] if mode == "updates" else []
    before = await asyncio.to_thread(_used_bytes, database)
    server: list[float] = []
    client: list[float] = []
    for number in range(runs):
        request = wait_request(thread_id, "echo", human(f"hello {number}"), stream_mode=modes)
        started = time.perf_counter()
        response = await stubs.runs.WaitRun(request, timeout=CALL_SECONDS)
        client.append(time.perf_counter() - started)
        check_run(response.run)
        server.append(run_seconds(response.run))
    after = await asyncio.to_thread(_used_bytes, database)
    return server, client, after - before


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _used_bytes(database: Path) -> int:
    """The bytes the database's pages hold (WAL included, free space not).

    Read from SQLite's `dbstat` table when it is compiled in, else counted in whole pages.
    """
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        try:
            used = conn.execute("SELECT SUM(pgsize - unused) FROM dbstat").fetchone()[0]
            return int(used)
        except sqlite3.OperationalError:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            return int((pages - free) * page_size)
    finally:
        conn.close()
