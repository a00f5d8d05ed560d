"""Checkpoints: each stores only its update, so writing a step costs what the step changed.

A thread's values are the fold of its checkpoints' updates in order. `StateCache` keeps the
folded state of recently used threads so reading the latest state does not replay history.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import OrderedDict
from typing import Any

from turnstile_server.errors import ThreadNotFound
from turnstile_server.state import ThreadState
from turnstile_server.store.database import Database
from turnstile_server.store.records import CheckpointRecord, now_us
from turnstile_server.store.rows import checkpoint_from_row, dumps, loads

CACHE_THREADS = 1024


class Checkpoints:
    """The `checkpoints` table and the folded-state cache."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: OrderedDict[str, tuple[CheckpointRecord, ThreadState]] = OrderedDict()
        self._generation: dict[str, int] = {}

    async def put(
        self, thread_id: str, run_id: str, step: int, source: str, update: dict[str, Any]
    ) -> CheckpointRecord:
        """Appends a checkpoint holding `update`; raises ThreadNotFound if the thread is gone."""
        checkpoint_id = str(uuid.uuid4())
        now = now_us()
        try:
            async with self._db.transaction() as conn:
                cur = await conn.execute(
                    "INSERT INTO checkpoints (checkpoint_id, thread_id, run_id, step, source,"
                    " update_json, create_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (checkpoint_id, thread_id, run_id, step, source, dumps(update), now),
                )
                seq = cur.lastrowid
                await conn.execute(
                    "UPDATE threads SET update_time = ? WHERE thread_id = ?", (now, thread_id)
                )
        except sqlite3.IntegrityError as exc:
            raise ThreadNotFound(thread_id) from exc
        assert seq is not None
        return CheckpointRecord(seq, checkpoint_id, thread_id, run_id, step, source, update, now)

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

    async def count_of_run(self, run_id: str) -> int:
        """Returns how many checkpoints a run has."""
        row = await self._db.fetchone(
            "SELECT COUNT(*) FROM checkpoints WHERE run_id = ?", (run_id,)
        )
        return int(row[0]) if row else 0

    async def state(self, thread_id: str) -> tuple[ThreadState, CheckpointRecord | None]:
        """Returns a private copy of the thread's latest state and its checkpoint."""
        generation = self._generation.get(thread_id, 0)
        cached = self._cache.get(thread_id)
        since = cached[0].seq if cached else 0
        rows = await self._db.fetchall(
            "SELECT * FROM checkpoints WHERE thread_id = ? AND seq > ? ORDER BY seq",
            (thread_id, since),
        )
        if self._generation.get(thread_id, 0) != generation:
            return await self.state(thread_id)  # checkpoints were deleted meanwhile: fold again
        state = cached[1].copy() if cached else ThreadState()
        last = cached[0] if cached else None
        for row in rows:
            last = checkpoint_from_row(row)
            state.apply(last.update)
        if rows:
            assert last is not None
            self._cache[thread_id] = (last, state.copy())
            while len(self._cache) > CACHE_THREADS:
                self._cache.popitem(last=False)
        if thread_id in self._cache:
            self._cache.move_to_end(thread_id)
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
