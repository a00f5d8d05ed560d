"""Runs: admission with the multitask strategies, starting, finishing, cancelling, reading.

Each change is one write of `store/run_writes.py`, run whole inside the writer's transaction.
"""

from __future__ import annotations

import builtins
from typing import Any

from turnstile_server.errors import RunActive, RunNotFound
from turnstile_server.ids import new_id
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
from turnstile_server.store.sqlite import run_writes
from turnstile_server.store.sqlite.checkpoints import Checkpoints
from turnstile_server.store.sqlite.database import Database, Session
from turnstile_server.store.sqlite.rows import run_from_row
from turnstile_server.store.sqlite.run_writes import SELECT_RUNS


class Runs:
    """The `runs` table and the thread statuses that follow from it."""

    def __init__(self, db: Database, checkpoints: Checkpoints) -> None:
        self._db = db
        # The folded-state cache follows every write here that adds or deletes checkpoints.
        self._checkpoints = checkpoints

    async def admit(self, spec: RunSpec, *, max_queued: int, start: bool = False) -> Admission:
        """Admits a run applying its multitask strategy, all in one transaction.

        With `start`, a run that is at once its thread's next (no other inflight run, no
        `after_seconds`) is also started in that transaction (`Admission.start`), as
        `start_next` would.

        A `request_id` seen before returns its run (`existing`), or `RequestIdReused` when the
        request asks for something else.

        An `enqueue` run is refused with `QueueFull` when `max_queued` runs of the thread are
        pending already.
        """
        run_id = new_id()
        now = now_us()
        admission = await self._db.write(
            lambda conn: run_writes.admit(conn, spec, run_id, now, max_queued, start)
        )
        if admission.deleted:  # a rolled-back run resumed after a restart has checkpoints
            self._checkpoints.forget(spec.thread_id)
        if admission.start is not None:
            self._started(admission.start)
        return admission

    async def get(self, thread_id: str, run_id: str) -> RunRecord:
        """Returns the run or raises RunNotFound."""
        rows = await self._db.fetchall(
            f"{SELECT_RUNS} WHERE r.run_id = ? AND r.thread_id = ?", (run_id, thread_id)
        )
        if not rows:
            raise RunNotFound(run_id)
        return run_from_row(rows[0])

    async def rolled_back(self, thread_id: str, run_id: str) -> RunRecord | None:
        """None: one process serves a SQLite file, and it remembers the runs it rolled back
        (`endings.Endings`); nothing is kept across its restarts (see `RunStore.rolled_back`)."""
        return None

    async def list(
        self, thread_id: str, *, status: str | None, limit: int, before: int | None
    ) -> tuple[list[RunRecord], int | None]:
        """Lists a thread's runs newest first; returns the page and the next cursor."""
        where = "r.thread_id = ?"
        params: list[Any] = [thread_id]
        if status:
            where += " AND r.status = ?"
            params.append(status)
        if before is not None:
            where += " AND r.seq < ?"
            params.append(before)
        rows = await self._db.fetchall(
            f"{SELECT_RUNS} WHERE {where} ORDER BY r.seq DESC LIMIT ?", [*params, limit + 1]
        )
        runs = [run_from_row(r) for r in rows[:limit]]
        return runs, (runs[-1].seq if len(rows) > limit else None)

    async def pending_ids(self) -> builtins.list[str]:
        """Returns the ids of every PENDING run."""
        rows = await self._db.fetchall("SELECT run_id FROM runs WHERE status = 'pending'")
        return [r["run_id"] for r in rows]

    async def threads_with_inflight(self) -> builtins.list[str]:
        """Returns the threads that have pending or running runs, oldest admission first."""
        rows = await self._db.fetchall(
            "SELECT thread_id, MIN(seq) AS first FROM runs"
            " WHERE status IN ('pending', 'running') GROUP BY thread_id ORDER BY first"
        )
        return [r["thread_id"] for r in rows]

    async def recover(self, max_attempts: int) -> Recovery:
        """Settles the runs a previous process left RUNNING, in one transaction.

        A run that was being cancelled ends as its cancellation says (interrupted, or deleted
        for a rollback); one that has had `max_attempts` attempts ends ERROR; the others go
        back to PENDING, to resume from their last checkpoint as a new attempt.
        """
        now = now_us()
        recovery = await self._db.write(lambda conn: run_writes.recover(conn, max_attempts, now))
        for run in recovery.deleted:
            self._checkpoints.forget(run.thread_id)
        return recovery

    async def start_next(self, thread_id: str) -> Start:
        """Starts the thread's earliest pending run as a new attempt, if it is due.

        On its first attempt the run's input is written as the thread's next checkpoint in the
        same write, so the input is applied exactly once however often the run resumes.
        """
        now = now_us()
        start = await self._db.write(lambda conn: run_writes.start_next(conn, thread_id, now))
        self._started(start)
        return start

    def _started(self, start: Start) -> None:
        if start.input is not None:
            self._checkpoints.advance(start.input)

    async def finish(
        self,
        run: RunRecord,
        status: str,
        *,
        error: RunError | None = None,
        then_start: bool = False,
        interrupts: builtins.list[dict[str, Any]] | None = None,
    ) -> Ended | None:
        """Ends a running run, or deletes it with its checkpoints if it is being rolled back.

        `run` is the run as it started (its record is not read back). `status` is how the run
        ended by itself; a pending cancellation recorded on the run
        overrides it. With `then_start`, the thread's next run is started in the same write
        if it is due, as `start_next` would (`Ended.next`). Returns None if the run is gone
        (its thread was deleted).
        """
        now = now_us()
        ended = await self._db.write(
            lambda conn: run_writes.finish(conn, run, status, error, now, then_start, interrupts)
        )
        if ended is not None:
            if ended.rolled_back:
                self._checkpoints.forget(run.thread_id)
            self._started(ended.next)
        return ended

    async def cancel(
        self, thread_id: str, run_id: str, action: str, *, reason: str | None = None
    ) -> tuple[RunRecord, bool]:
        """Cancels a run: a pending one ends (or is deleted) now, a running one is marked.

        Returns the run (final if it ended now) and whether it is still running, to be stopped.
        """
        now = now_us()
        run, running = await self._db.write(
            lambda conn: run_writes.cancel(conn, thread_id, run_id, action, reason, now)
        )
        if not running and action == "rollback":
            self._checkpoints.forget(thread_id)
        return run, running

    async def delete(self, thread_id: str, run_id: str) -> None:
        """Deletes an ended run (its checkpoints stay part of the thread's history)."""

        def delete(conn: Session) -> None:
            run = run_writes.one(conn, "r.run_id = ? AND r.thread_id = ?", run_id, thread_id)
            if run is None:
                raise RunNotFound(run_id)
            if run.inflight:
                raise RunActive(run_id, run.status)
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

        await self._db.write(delete)
