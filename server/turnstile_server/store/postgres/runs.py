"""Runs: admission with the multitask strategies, starting, finishing, cancelling, reading.

Each change is one transaction of `run_writes.py`, which begins by locking the thread's row.
"""

from __future__ import annotations

import builtins
from typing import Any

from turnstile_server.errors import RunActive, RunNotFound
from turnstile_server.ids import new_id
from turnstile_server.store.postgres import run_writes
from turnstile_server.store.postgres.database import Conn, Database
from turnstile_server.store.postgres.locks import lock_thread
from turnstile_server.store.postgres.rows import SELECT_RUNS, Params, run_from_row
from turnstile_server.store.records import (
    Admission,
    Ended,
    Recovery,
    RunError,
    RunRecord,
    RunSpec,
    Start,
    now_us,
)


class Runs:
    """The `runs` table and the thread statuses that follow from it."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def admit(self, spec: RunSpec, *, max_queued: int, start: bool = False) -> Admission:
        """Admits a run applying its multitask strategy, in one transaction that holds the
        thread's row lock: check, insert, supersede (see `RunStore.admit`)."""
        run_id = new_id()
        now = now_us()
        return await self._db.write(
            lambda conn: run_writes.admit(conn, spec, run_id, now, max_queued, start)
        )

    async def get(self, thread_id: str, run_id: str) -> RunRecord:
        """Returns the run or raises RunNotFound."""
        row = await self._db.fetchrow(
            f"{SELECT_RUNS} WHERE r.run_id = $1 AND r.thread_id = $2", run_id, thread_id
        )
        if row is None:
            raise RunNotFound(run_id)
        return run_from_row(row)

    async def rolled_back(self, thread_id: str, run_id: str) -> RunRecord | None:
        """The run as it was when rolled back, whichever replica rolled it back, for a day
        (see `RunStore.rolled_back`)."""
        return await self._db.read(lambda conn: run_writes.rolled_back(conn, thread_id, run_id))

    async def list(
        self, thread_id: str, *, status: str | None, limit: int, before: int | None
    ) -> tuple[list[RunRecord], int | None]:
        """Lists a thread's runs newest first; returns the page and the next cursor."""
        params = Params(thread_id)
        where = "r.thread_id = $1"
        if status:
            where += f" AND r.status = {params.add(status)}"
        if before is not None:
            where += f" AND r.seq < {params.add(before)}"
        rows = await self._db.fetch(
            f"{SELECT_RUNS} WHERE {where} ORDER BY r.seq DESC LIMIT {params.add(limit + 1)}",
            *params.values,
        )
        runs = [run_from_row(r) for r in rows[:limit]]
        return runs, (runs[-1].seq if len(rows) > limit else None)

    async def pending_ids(self) -> builtins.list[str]:
        """Returns the ids of every PENDING run."""
        rows = await self._db.fetch("SELECT run_id FROM runs WHERE status = 'pending'")
        return [r["run_id"] for r in rows]

    async def threads_with_inflight(self) -> builtins.list[str]:
        """Returns the threads that have pending or running runs, oldest admission first."""
        rows = await self._db.fetch(
            "SELECT thread_id, MIN(seq) AS first FROM runs"
            " WHERE status IN ('pending', 'running') GROUP BY thread_id ORDER BY first"
        )
        return [r["thread_id"] for r in rows]

    async def recover(self, max_attempts: int) -> Recovery:
        """Settles the runs left RUNNING, in one transaction (see `RunStore.recover`).

        Every run left RUNNING, a live replica's too: the store replicas open is
        `replica_runs.ReplicaRuns`, whose `recover` is the sweeper (expired leases only)."""
        now = now_us()
        return await self._db.write(lambda conn: run_writes.recover(conn, max_attempts, now))

    async def start_next(self, thread_id: str) -> Start:
        """Starts the thread's earliest pending run as a new attempt, if it is due; its first
        attempt writes its input as the thread's next checkpoint in the same transaction."""
        now = now_us()
        return await self._db.write(lambda conn: run_writes.start_next(conn, thread_id, now))

    async def finish(
        self,
        run: RunRecord,
        status: str,
        *,
        error: RunError | None = None,
        then_start: bool = False,
        interrupts: builtins.list[dict[str, Any]] | None = None,
    ) -> Ended | None:
        """Ends a running run, or deletes it with its checkpoints if it is being rolled back
        (see `RunStore.finish`: `interrupts` says it stopped waiting for input). None if the
        run is gone with its thread."""
        now = now_us()
        return await self._db.write(
            lambda conn: run_writes.finish(conn, run, status, error, now, then_start, interrupts)
        )

    async def cancel(
        self, thread_id: str, run_id: str, action: str, *, reason: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Cancels a run: a pending one ends (or is deleted) now, a running one is marked.
        Returns the run (final if it ended now) and whether it is still running."""
        now = now_us()
        return await self._db.write(
            lambda conn: run_writes.cancel(conn, thread_id, run_id, action, reason, now)
        )

    async def delete(self, thread_id: str, run_id: str) -> None:
        """Deletes an ended run (its checkpoints stay part of the thread's history)."""

        async def delete(conn: Conn) -> None:
            await lock_thread(conn, thread_id)
            run = await run_writes.one(
                conn, "r.run_id = $1 AND r.thread_id = $2", run_id, thread_id
            )
            if run is None:
                raise RunNotFound(run_id)
            if run.inflight:
                raise RunActive(run_id, run.status)
            await conn.execute("DELETE FROM runs WHERE run_id = $1", run_id)

        await self._db.write(delete)
