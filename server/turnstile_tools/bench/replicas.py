"""Replicas on PostgreSQL beside SQLite, measured in one run (`scripts/bench_replicas.py`).

- **Throughput**: `clients` callers, each on threads of its own, `WaitRun` of `echo` in a
  loop, caller i on replica i mod n; runs/s, and the CPU per run of the server processes
  (`/proc/<pid>/stat`: user + system of every thread) and, on PostgreSQL, of the database's
  backends serving them (their pids from `pg_stat_activity`, also from `/proc`).
- **Cancellation across replicas**: a `bench_sleep` run executes on replica a (admitted
  there); `CancelRun` (interrupt) is sent to replica b; the figure is from just before the
  call until the run's attempt ended, by the attempts' audit (`run_attempts.end_time`, the
  database's clock: the same machine's clock as the bench's). Also with a's LISTEN
  connection cut just before (`pg_terminate_backend`): the NOTIFY may be lost; a notices the
  connection ended, listens again and asks the database for its cancellations at once
  (`replica.py`), and its heartbeat would within one beat if it had not noticed.
- **Interrupt handoff across replicas**: as above, but `CreateRun(interrupt)` of `echo` sent
  to b; until the old attempt ended, and until the new run's attempt began (on a, which
  starts it in the write that finishes the old one).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from turnstile.v1 import run_pb2, run_service_pb2
from turnstile_tools.bench.latency import Figures, sleeping_run
from turnstile_tools.bench.load import (
    CALL_SECONDS,
    INTERRUPT,
    Channels,
    Latency,
    check_run,
    create_request,
    human,
    new_thread,
    wait_request,
)
from turnstile_tools.bench.processes import TurnstileProcess, cpu_seconds

INTERRUPT_ACTION = run_pb2.CANCEL_ACTION_INTERRUPT


@dataclass
class Replicas:
    """The serving processes of one setup, their channels, and the database they share."""

    servers: list[TurnstileProcess]
    channels: list[Channels]
    database_url: str = ""  # "" on SQLite

    def cpu(self) -> float:
        return sum(server.cpu_seconds() for server in self.servers)


@contextlib.asynccontextmanager
async def postgres_database(url: str) -> AsyncIterator[str]:
    """A fresh database on the PostgreSQL server of `url`, dropped afterwards."""
    name = f"turnstile_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def serving(
    database: str, count: int, directory: Path, label: str, extra: Sequence[str] = ()
) -> AsyncIterator[Replicas]:
    """`count` servers on `database` (one after the other: the first migrates)."""
    servers: list[TurnstileProcess] = []
    channels: list[Channels] = []
    try:
        for index in range(count):
            name = f"{label}-{'abc'[index]}"
            args = [f"--replica-name={name}", *extra] if "://" in database else list(extra)
            server = await TurnstileProcess.start(database, directory / f"{name}.log", args)
            servers.append(server)
            channels.append(Channels(server.address, 4))
            await channels[-1].ready()
        yield Replicas(servers, channels, database if database.startswith("postgres") else "")
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop()


async def throughput(replicas: Replicas, clients: int, runs: int) -> Figures:
    """Runs/s of `clients` WaitRun loops spread over the replicas, and CPU per run."""
    per_client = max(1, runs // clients)
    targets = [replicas.channels[i % len(replicas.channels)].stubs(i) for i in range(clients)]
    threads = [await new_thread(stubs) for stubs in targets]
    for stubs, thread_id in zip(targets, threads, strict=True):  # warm each path once
        check_run((await stubs.runs.WaitRun(wait_request(thread_id, "echo", human("w")))).run)
    database_cpu = _cpu_of(await _backends(replicas.database_url))
    server_cpu = replicas.cpu()
    started = time.perf_counter()

    async def loop(stubs: object, thread_id: str) -> None:
        for number in range(per_client):
            request = wait_request(thread_id, "echo", human(f"hi {number}"))
            response = await stubs.runs.WaitRun(request, timeout=CALL_SECONDS)  # type: ignore[attr-defined]
            check_run(response.run)

    await asyncio.gather(*(loop(s, t) for s, t in zip(targets, threads, strict=True)))
    elapsed = time.perf_counter() - started
    done = per_client * clients
    figures: Figures = {
        "runs": done,
        "rate": done / elapsed,
        "cpu_per_run": (replicas.cpu() - server_cpu) / done,
        "servers": len(replicas.servers),
    }
    if replicas.database_url:
        after = _cpu_of(await _backends(replicas.database_url))
        used = sum(seconds - database_cpu.get(pid, 0.0) for pid, seconds in after.items())
        figures["database_cpu_per_run"] = used / done
    return figures


async def cancellation(
    replicas: Replicas, trials: int, *, cut_listen: bool, spread: float = 0.0
) -> Figures:
    """CancelRun on b of a run executing on a: until its attempt ended (see the module).

    `spread`: a pause of up to that many seconds (uniform, seeded) before each trial, so
    that trials fall anywhere in the heartbeat's period; without it each trial would begin
    just after the beat that ended the one before, and always wait a whole beat.
    """
    rng = random.Random(12)
    a, b = replicas.channels[0].stubs(0), replicas.channels[1].stubs(0)
    conn = await asyncpg.connect(replicas.database_url, timeout=10)
    try:
        samples: list[float] = []
        threads: list[str] = []
        for _ in range(trials):
            # A thread of its own each time: a run queued behind one that is finishing may be
            # claimed by b, whose stream a would not serve (streams are the executing
            # replica's until Redis relays them).
            thread_id = await new_thread(a)
            threads.append(thread_id)
            if spread:
                await asyncio.sleep(rng.uniform(0, spread))
            run_id = await sleeping_run(a, thread_id)
            if cut_listen:
                await _cut_listen(conn, "a")
            sent = time.time()
            await b.runs.CancelRun(
                run_service_pb2.CancelRunRequest(
                    thread_id=thread_id, run_id=run_id, action=INTERRUPT_ACTION
                ),
                timeout=CALL_SECONDS,
            )
            ended = await _attempt_time(conn, run_id, "end_time")
            samples.append(ended.timestamp() - sent)
        await _executed_by(conn, threads, "a")
    finally:
        await conn.close()
    latency = Latency.of(samples)
    return {"p50": latency.p50, "p99": latency.p99, "max": max(samples), "trials": trials}


async def handoff(replicas: Replicas, trials: int) -> Figures:
    """CreateRun(interrupt) on b of a thread whose run executes on a (see the module)."""
    a, b = replicas.channels[0].stubs(0), replicas.channels[1].stubs(0)
    conn = await asyncpg.connect(replicas.database_url, timeout=10)
    try:
        stopped: list[float] = []
        started: list[float] = []
        threads: list[str] = []
        for _ in range(trials):
            thread_id = await new_thread(a)  # see `cancellation`
            threads.append(thread_id)
            old = await sleeping_run(a, thread_id)
            sent = time.time()
            request = create_request(thread_id, "echo", human("hi"), multitask_strategy=INTERRUPT)
            new = (await b.runs.CreateRun(request, timeout=CALL_SECONDS)).run.run_id
            stopped.append((await _attempt_time(conn, old, "end_time")).timestamp() - sent)
            started.append((await _attempt_time(conn, new, "start_time")).timestamp() - sent)
            await _attempt_time(conn, new, "end_time")
        await _executed_by(conn, threads, "a")
    finally:
        await conn.close()
    stop, start = Latency.of(stopped), Latency.of(started)
    return {
        "stop_p50": stop.p50,
        "stop_p99": stop.p99,
        "start_p50": start.p50,
        "start_p99": start.p99,
        "trials": trials,
    }


async def _attempt_time(conn: asyncpg.Connection, run_id: str, column: str) -> datetime:
    """The run's latest attempt's start or end, once the audit has it (polled every 2 ms)."""
    async with asyncio.timeout(CALL_SECONDS):
        while True:
            value = await conn.fetchval(
                f"SELECT {column} FROM run_attempts WHERE run_id = $1 ORDER BY epoch DESC LIMIT 1",
                run_id,
            )
            if value is not None:
                return value  # type: ignore[no-any-return]
            await asyncio.sleep(0.002)


async def _executed_by(conn: asyncpg.Connection, threads: list[str], suffix: str) -> None:
    """Raises unless every attempt on the threads ran on the replica named `*-<suffix>`."""
    names = await conn.fetch(
        "SELECT DISTINCT l.name FROM run_attempts a JOIN replicas l ON l.incarnation = a.owner"
        " WHERE a.thread_id = ANY($1::text[])",
        threads,
    )
    if [row["name"].rpartition("-")[2] for row in names] != [suffix]:
        raise RuntimeError(f"runs executed on {[row['name'] for row in names]}, not on {suffix}")


async def _cut_listen(conn: asyncpg.Connection, suffix: str) -> None:
    """Terminates the LISTEN connection of the replica named `*-<suffix>`, and waits until
    its backend is gone (so the NOTIFY that follows is lost)."""
    pids = [
        row["pid"]
        for row in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE $1",
            f"turnstile listen %-{suffix}",
        )
    ]
    await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
    async with asyncio.timeout(CALL_SECONDS):
        gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])"
        while await conn.fetchval(gone, pids):  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.002)


async def _backends(url: str) -> list[int]:
    """The pids of the database's backends (the replicas' pools, leases and listeners)."""
    if not url:
        return []
    conn = await asyncpg.connect(url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [row["pid"] for row in rows]


def _cpu_of(pids: Sequence[int], read: Callable[[int], float] = cpu_seconds) -> dict[int, float]:
    """Each process's CPU seconds so far (a backend that opened meanwhile counts from 0; one
    that closed meanwhile is missed)."""
    used: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            used[pid] = read(pid)
    return used
