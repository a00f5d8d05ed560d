"""Checkpoints: each stores only its update, so writing a step costs what the step changed.

A thread's values are the fold of its checkpoints' updates in order. The cache keeps the
folded state of recently used threads, advanced by every checkpoint this process writes, so
neither a run starting nor a read of the latest state replays history.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import OrderedDict
from typing import Any

from turnstile_server.errors import ThreadNotFound
from turnstile_server.ids import new_id
from turnstile_server.state import ThreadState
from turnstile_server.store.records import CheckpointRecord, now_us
from turnstile_server.store.sqlite.database import Database, Session, landed
from turnstile_server.store.sqlite.rows import checkpoint_from_row, dumps, loads

CACHE_THREADS = 1024


class Checkpoints:
    """The `checkpoints` table and the folded-state cache."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: OrderedDict[str, tuple[CheckpointRecord, ThreadState]] = OrderedDict()
        self._generation: dict[str, int] = {}

    async def put(
        self,
        thread_id: str,
        run_id: str,
        step: int,
        source: str,
        update: dict[str, Any],
        *,
        epoch: int = 0,
    ) -> CheckpointRecord:
        """Appends a checkpoint holding `update`; raises ThreadNotFound if the thread is gone.

        The write lands, and the cached state advances, even if the caller is cancelled
        meanwhile (the caller then waits for it): a run is finished, or rolled back, only after
        its task has unwound, so no checkpoint of the run can reach the database after that.
        """
        written = self.submit(thread_id, run_id, [(step, source, update)])
        return (await self.landed(written, thread_id))[0]

    def submit(
        self,
        thread_id: str,
        run_id: str,
        steps: list[tuple[int, str, dict[str, Any]]],
        *,
        epoch: int = 0,
    ) -> asyncio.Future[list[CheckpointRecord]]:
        """Queues a checkpoint per `(step, source, update)`, in order, in one write, for good,
        and returns the write at once (await it with `landed`, which `put` does): the cached
        state advances when it is committed. (`epoch` is not checked: one process owns the
        file, and its runs are never fenced.)"""
        now = now_us()
        written = self._db.submit(
            lambda conn: [
                insert_checkpoint(conn, thread_id, run_id, step, source, update, now)
                for step, source, update in steps
            ]
        )
        written.add_done_callback(self._advance_written)
        return written

    @staticmethod
    async def landed(
        written: asyncio.Future[list[CheckpointRecord]], thread_id: str
    ) -> list[CheckpointRecord]:
        """Awaits a submitted write (see `database.landed`); ThreadNotFound if the thread went."""
        try:
            return await landed(written)
        except sqlite3.IntegrityError as exc:
            raise ThreadNotFound(thread_id) from exc

    def _advance_written(self, written: asyncio.Future[list[CheckpointRecord]]) -> None:
        if not written.cancelled() and written.exception() is None:
            for record in written.result():
                self.advance(record)

    def advance(self, record: CheckpointRecord) -> None:
        """Folds a checkpoint just written into the thread's cached state.

        Each checkpoint a thread gets is written by this process and advanced here before the
        thread's next one is written, so a cached state behind `record` lacks only `record`.
        """
        cached = self._cache.get(record.thread_id)
        if cached is not None and cached[0].seq < record.seq:
            cached[1].apply(record.update)
            self._cache[record.thread_id] = (record, cached[1])

    async def live(self, thread_id: str) -> ThreadState:
        """The thread's cached state itself, for the one run executing on the thread.

        It is not copied: `put` advances it, so the run reads its own steps back from it. Any
        other reader takes a copy through `state`.
        """
        cached = self._cache.get(thread_id)
        if cached is not None:
            self._cache.move_to_end(thread_id)
            return cached[1]
        state, _ = await self._folded(thread_id)
        return state

    def latest_live(self, thread_id: str) -> tuple[CheckpointRecord, ThreadState] | None:
        """The thread's newest checkpoint and its cached state itself, when cached: to be read
        at once, before anything else runs (a running run advances it)."""
        return self._cache.get(thread_id)

    def forget(self, thread_id: str) -> None:
        """Drops the cached state of a thread whose checkpoints were deleted."""
        self._cache.pop(thread_id, None)
        self._generation[thread_id] = self._generation.get(thread_id, 0) + 1

    async def last_of_run(self, run_id: str) -> CheckpointRecord | None:
        """Returns the newest checkpoint a run wrote, or None."""
        row = await self._db.fetchone(
            "SELECT * FROM checkpoints WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
        )
        return checkpoint_from_row(row) if row else None

    async def find(self, thread_id: str, checkpoint_id: str) -> CheckpointRecord | None:
        """Returns the thread's checkpoint with that id, or None."""
        row = await self._db.fetchone(
            "SELECT * FROM checkpoints WHERE checkpoint_id = ? AND thread_id = ?",
            (checkpoint_id, thread_id),
        )
        return checkpoint_from_row(row) if row else None

    async def parent(self, thread_id: str, seq: int) -> CheckpointRecord | None:
        """Returns the thread's checkpoint just before the one numbered `seq`, or None."""
        row = await self._db.fetchone(
            "SELECT * FROM checkpoints WHERE thread_id = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
            (thread_id, seq),
        )
        return checkpoint_from_row(row) if row else None

    async def state(self, thread_id: str) -> tuple[ThreadState, CheckpointRecord | None]:
        """Returns a private copy of the thread's latest state and its checkpoint."""
        state, last = await self._folded(thread_id)
        return (state.copy(), last) if last is not None else (state, None)

    async def _folded(self, thread_id: str) -> tuple[ThreadState, CheckpointRecord | None]:
        """The thread's cached state brought up to its newest checkpoint, not copied (a new,
        uncached empty state when it has none)."""
        generation = self._generation.get(thread_id, 0)
        cached = self._cache.get(thread_id)
        since = cached[0].seq if cached else 0
        rows = await self._db.fetchall(
            "SELECT * FROM checkpoints WHERE thread_id = ? AND seq > ? ORDER BY seq",
            (thread_id, since),
        )
        if self._generation.get(thread_id, 0) != generation:
            return await self._folded(thread_id)  # checkpoints were deleted meanwhile
        current = self._cache.get(thread_id)
        if current is None:
            base = (cached[0], cached[1].copy()) if cached else None
            last, state = base if base else (None, ThreadState())
        else:
            last, state = current  # fold into the cached state itself: a run may hold it
        for row in rows:
            if last is None or row["seq"] > last.seq:
                last = checkpoint_from_row(row)
                state.apply(last.update)
        if last is None:
            return state, None
        state.measure()  # once per cached state: its applies and copies keep the size
        self._cache[thread_id] = (last, state)
        self._cache.move_to_end(thread_id)
        while len(self._cache) > CACHE_THREADS:
            self._cache.popitem(last=False)
        return state, last

    async def values_at(self, thread_id: str, seq: int) -> dict[str, Any]:
        """Returns the thread's values at the checkpoint with sequence number `seq`."""
        cached = self._cache.get(thread_id)
        if cached and cached[0].seq == seq:
            return cached[1].snapshot()
        rows = await self._db.fetchall(
            "SELECT update_json FROM checkpoints WHERE thread_id = ? AND seq <= ? ORDER BY seq",
            (thread_id, seq),
        )
        state = ThreadState()
        for row in rows:
            state.apply(loads(row[0]))
        return state.snapshot()

    async def history(
        self, thread_id: str, *, limit: int, before: int | None
    ) -> tuple[list[tuple[CheckpointRecord, dict[str, Any]]], int | None]:
        """Lists checkpoints newest first with the values at each; returns the next cursor."""
        bound = before if before is not None else 2**62
        rows = await self._db.fetchall(
            "SELECT * FROM checkpoints WHERE thread_id = ? AND seq < ? ORDER BY seq",
            (thread_id, bound),
        )
        state = ThreadState()
        folded: list[tuple[CheckpointRecord, dict[str, Any]]] = []
        first_kept = max(0, len(rows) - limit)
        for index, row in enumerate(rows):
            record = checkpoint_from_row(row)
            state.apply(record.update)
            if index >= first_kept:
                folded.append((record, state.snapshot()))
        folded.reverse()
        cursor = folded[-1][0].seq if first_kept > 0 and folded else None
        return folded, cursor


def insert_checkpoint(
    conn: Session,
    thread_id: str,
    run_id: str,
    step: int,
    source: str,
    update: dict[str, Any],
    now: int,
    *,
    run_checked: bool = False,
) -> CheckpointRecord:
    """Inserts a checkpoint inside a write; IntegrityError if the thread or the run is gone.

    The run's row is looked for, not only the thread's: a thread deleted while its run unwinds
    and created again under the same id would otherwise take the checkpoints the run writes on
    its way out (`exit` durability holds them until then). A run's writes never outlive it.
    The look-up is part of the insert (one statement); `run_checked` skips it for a write that
    has just inserted or updated the run's row itself.

    The thread's `update_time` is not touched: it moves with the thread's status, when a run
    is admitted and when it ends, not with every step.
    """
    checkpoint_id = new_id()
    values = (checkpoint_id, thread_id, run_id, step, source, dumps(update), now)
    if run_checked:
        row = conn.one(_INSERT_CHECKPOINT, values)
    else:
        row = conn.one(_INSERT_CHECKPOINT_OF_RUN, (*values, run_id, thread_id))
    if row is None:
        raise sqlite3.IntegrityError(f"run {run_id} of thread {thread_id} is gone")
    return CheckpointRecord(row[0], checkpoint_id, thread_id, run_id, step, source, update, now)


_CHECKPOINT_COLUMNS = "checkpoint_id, thread_id, run_id, step, source, update_json, create_time"
_INSERT_CHECKPOINT = (
    f"INSERT INTO checkpoints ({_CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq"
)
_INSERT_CHECKPOINT_OF_RUN = (
    f"INSERT INTO checkpoints ({_CHECKPOINT_COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ? AND thread_id = ?) RETURNING seq"
)
