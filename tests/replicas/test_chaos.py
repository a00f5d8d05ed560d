"""30 s of bounded chaos over three replicas, then the checker (`checker.py`).

The seed is `TURNSTILE_CHAOS_SEED` (default 22) and is printed with the schedule the run
went through, so a failure names what to run again.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import pytest

from tests.replicas.chaos import Chaos, client_loop, fault_loop
from tests.replicas.checker import violations
from tests.replicas.cluster import Cluster, Replica, cluster
from tests.support import eventually

pytestmark = pytest.mark.timeout(150)

SECONDS = 30.0
THREADS = 3
CLIENTS_PER_THREAD = 2
SETTLE_WITHIN = 60.0
OPTIONS = ("--shutdown-grace-seconds", "1")


async def test_thirty_seconds_of_faults_break_no_guarantee(tmp_path: Path) -> None:
    seed = int(os.environ.get("TURNSTILE_CHAOS_SEED", "22"))
    print(f"chaos seed {seed} (TURNSTILE_CHAOS_SEED={seed} runs this schedule again)")
    names = ("a", "b", "c")
    async with cluster(tmp_path, names, *OPTIONS, own_redis=True) as group:
        chaos = Chaos(group, seed, names, OPTIONS)
        try:
            setup = chaos.client("a")
            threads = [(await setup.threads.create())["thread_id"] for _ in range(THREADS)]
            stop = asyncio.Event()
            clients = [
                asyncio.create_task(client_loop(chaos, i, threads[i % THREADS], stop))
                for i in range(THREADS * CLIENTS_PER_THREAD)
            ]
            begin = time.monotonic()
            try:
                await fault_loop(chaos, SECONDS)
            finally:
                stop.set()
                done = await asyncio.gather(*clients, return_exceptions=True)
            elapsed = time.monotonic() - begin
            print(f"faults: {len(chaos.faults)} in {elapsed:.1f} s (recovery in brackets)")
            for line in chaos.faults:
                print("  " + line)
            print(
                f"acknowledged runs {len(chaos.acks)}, refused {chaos.refused},"
                f" cancels {chaos.cancels}, unanswered creates {chaos.unanswered};"
                f" killed or terminated replicas exited in {[round(s, 1) for s in chaos.exits]} s"
            )
            assert [d for d in done if isinstance(d, BaseException)] == []
            assert chaos.faults and chaos.acks

            async def settled() -> None:
                rows = await group.query(
                    "SELECT run_id, status FROM runs WHERE status IN ('pending', 'running')"
                )
                assert rows == [], rows

            try:
                await eventually(settled, within=SETTLE_WITHIN, interval=0.1)
            except AssertionError:
                print(await _stuck(group, tmp_path))
                raise
            found = await violations(group, chaos.acks, chaos.silenced)
            outcomes = await group.query(
                "SELECT status, count(*) AS n FROM runs GROUP BY status ORDER BY status"
            )
            rolled_back = await group.query("SELECT count(*) AS n FROM rolled_back_runs")
            attempts = await group.query(
                "SELECT outcome, count(*) AS n FROM run_attempts GROUP BY outcome ORDER BY 1"
            )
            print(
                "runs:",
                {r["status"]: r["n"] for r in outcomes},
                "rolled back:",
                rolled_back[0]["n"],
            )
            print("attempts:", {r["outcome"]: r["n"] for r in attempts})
            if found:
                print(await _named(group, tmp_path, found, chaos.retired))
            assert found == [], f"seed {seed}: " + "\n".join(found)
        finally:
            await chaos.close()


async def _named(group: Cluster, directory: Path, found: list[str], retired: list[Replica]) -> str:
    """The rows of the runs the violations name, and what every replica (the restarted ones
    too) said of them (their whole logs are written into `directory`)."""
    named = sorted({m for line in found for m in re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", line)})
    lines = ["the runs named:"]
    for run_id in named:
        for table in ("runs", "rolled_back_runs", "run_attempts"):
            rows = await group.query(f"SELECT * FROM {table} WHERE run_id = $1", run_id)
            lines += [f"  {table}: {dict(row)}" for row in rows]
    for replica in [*retired, *group.replicas]:
        log = directory / f"{replica.name}-{replica.process.pid}.log"
        await asyncio.to_thread(log.write_text, "".join(replica.lines))
        lines.append(f"replica {replica.name}'s log ({log}) said of them:")
        lines += [f"  {line.rstrip()}" for line in replica.lines if any(r in line for r in named)]
    return "\n".join(lines)


async def _stuck(group: Cluster, directory: Path) -> str:
    """What the runs that did not end were doing, and what the replicas said of them (their
    whole logs are written into `directory`)."""
    rows = await group.query(
        "SELECT r.thread_id, r.run_id, r.status, r.attempt, r.epoch, r.owner, r.cancel_action,"
        " l.name, l.expires_at > clock_timestamp() AS alive FROM runs r"
        " LEFT JOIN replicas l ON l.incarnation = r.owner"
        " WHERE r.status IN ('pending', 'running') ORDER BY r.thread_id, r.seq"
    )
    lines = ["runs that did not end:", *(f"  {dict(row)}" for row in rows)]
    sessions = await group.query(
        "SELECT pid, application_name, state, wait_event_type, wait_event,"
        " now() - xact_start AS in_transaction, left(query, 120) AS query FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND state <> 'idle'"
    )
    lines += ["sessions not idle:", *(f"  {dict(row)}" for row in sessions)]
    for replica in group.replicas:
        log = directory / f"{replica.name}-{replica.process.pid}.log"
        await asyncio.to_thread(log.write_text, "".join(replica.lines))
        lines.append(f"replica {replica.name}'s log: {log}")
    stuck = {row["run_id"] for row in rows}
    for replica in group.replicas:
        lines.append(f"replica {replica.name} ({replica.incarnation}) said of them:")
        lines += [
            f"  {line.rstrip()}"
            for line in replica.lines
            if any(run_id in line for run_id in stuck)
            or " INFO " not in line
            or "turnstile_server.metrics" not in line
        ][-80:]
    return "\n".join(lines)
