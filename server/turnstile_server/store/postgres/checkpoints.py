"""Checkpoints, each holding its step's update, and a state cache that other replicas'
writes cannot fool.

A thread's values are the fold of its checkpoints' updates in order. The cache keeps the
folded state of recently used threads with the checkpoint it is folded up to, and every read
first asks the database, in one query, for that checkpoint and the thread's newer ones:
- the newer ones are folded in (whoever wrote them: this process or another replica);
- if that checkpoint is gone (a rollback or a thread deletion, here or elsewhere), the cached
  state is thrown away and the thread folded afresh.
That is enough because checkpoints are only ever deleted from the end of a thread's history
(a rollback deletes inflight runs' checkpoints, which are the newest) or all at once (thread
deletion), and because a thread's checkpoints are numbered in the order they commit: every
insert holds the thread's row lock (`locks.lock_thread`). A read costs one round trip that
returns only what the cache lacks, never the thread's whole history, and the cache is never
handed out: readers get copies.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from turnstile_server.errors import ThreadNotFound
from turnstile_server.ids import new_id
from turnstile_server.state import ThreadState
from turnstile_server.store.postgres.database import Conn, Database, landed
from turnstile_server.store.postgres.fence import fence
from turnstile_server.store.postgres.locks import lock_thread
from turnstile_server.store.postgres.rows import Row, checkpoint_from_row, dumps, loads
from turnstile_server.store.records import CheckpointRecord, now_us

CACHE_THREADS = 1024


class Checkpoints:
    """The `checkpoints` table and the validated folded-state cache."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cache: OrderedDict[str, tuple[CheckpointRecord, ThreadState]] = OrderedDict()

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
        """Appends a checkpoint holding `update`; ThreadNotFound if the thread or the run is
        gone, AttemptFenced if `epoch`'s attempt no longer holds the run. It lands even if
        the caller is cancelled meanwhile (the caller waits for it)."""
        written = self.submit(thread_id, run_id, [(step, source, update)], epoch=epoch)
        return (await self.landed(written, thread_id))[0]

    def submit(
        self,
        thread_id: str,
        run_id: str,
        steps: list[tuple[int, str, dict[str, Any]]],
        *,
        epoch: int = 0,
    ) -> asyncio.Future[list[CheckpointRecord]]:
        """Starts writing a checkpoint per `(step, source, update)`, in order, in one
        transaction, for good, and returns the write at once (await it with `landed`); with
        `epoch`, only while that attempt holds the run (`fence.py`)."""
        now = now_us()

        async def write(conn: Conn) -> list[CheckpointRecord]:
            if await lock_thread(conn, thread_id) is None:
                raise ThreadNotFound(thread_id)
            await fence(conn, run_id, epoch)
            return [
                await insert_checkpoint(
                    conn, thread_id, run_id, step, source, update, now, epoch=epoch
                )
                for step, source, update in steps
            ]

        return self._db.submit(write)

    @staticmethod
    async def landed(
        written: asyncio.Future[list[CheckpointRecord]], thread_id: str
    ) -> list[CheckpointRecord]:
        """Awaits a submitted write; ThreadNotFound if the thread (or the run) went."""
        return await landed(written)

    async def live(self, thread_id: str) -> ThreadState:
        """The thread's state for the run executing on it: a private copy here (the cache
        is validated on every read, so there is no live object to share)."""
        state, _ = await self._folded(thread_id)
        return state

    def latest_live(self, thread_id: str) -> tuple[CheckpointRecord, ThreadState] | None:
        """None: what is cached may be behind another replica's writes until a read checks
        it, so nothing is answered from the cache without asking the database."""
        return None

    async def last_of_run(self, run_id: str) -> CheckpointRecord | None:
        """Returns the newest checkpoint a run wrote, or None."""
        row = await self._db.fetchrow(
            "SELECT * FROM checkpoints WHERE run_id = $1 ORDER BY seq DESC LIMIT 1", run_id
        )
        return checkpoint_from_row(row) if row else None

    async def find(self, thread_id: str, checkpoint_id: str) -> CheckpointRecord | None:
        """Returns the thread's checkpoint with that id, or None."""
        row = await self._db.fetchrow(
            "SELECT * FROM checkpoints WHERE checkpoint_id = $1 AND thread_id = $2",
            checkpoint_id,
            thread_id,
        )
        return checkpoint_from_row(row) if row else None

    async def parent(self, thread_id: str, seq: int) -> CheckpointRecord | None:
        """Returns the thread's checkpoint just before the one numbered `seq`, or None."""
        row = await self._db.fetchrow(
            "SELECT * FROM checkpoints WHERE thread_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT 1",
            thread_id,
            seq,
        )
        return checkpoint_from_row(row) if row else None

    async def state(self, thread_id: str) -> tuple[ThreadState, CheckpointRecord | None]:
        """Returns a private copy of the thread's latest state and its checkpoint."""
        return await self._folded(thread_id)

    async def _folded(self, thread_id: str) -> tuple[ThreadState, CheckpointRecord | None]:
        """The thread's state at its newest checkpoint, as a private copy, with the cache
        brought up to it."""
        cached = self._cache.get(thread_id)
        since = cached[0].seq if cached else 0
        rows = await self._db.fetch(
            "SELECT * FROM checkpoints WHERE thread_id = $1 AND seq >= $2 ORDER BY seq",
            thread_id,
            since,
        )
        if cached is not None and (not rows or rows[0]["seq"] != since):
            # The checkpoint the cache was folded up to is gone: fold from the start.
            cached = None
            rows = await self._db.fetch(
                "SELECT * FROM checkpoints WHERE thread_id = $1 ORDER BY seq", thread_id
            )
        fresh: list[Row] = rows[1:] if cached is not None else rows
        if cached is not None and not fresh:
            self._keep(thread_id, cached)
            return cached[1].copy(), cached[0]
        # Folded into a copy: a concurrent read of the same thread may fold the same rows.
        last, state = cached if cached is not None else (None, ThreadState())
        state = state.copy()
        for row in fresh:
            last = checkpoint_from_row(row)
            state.apply(last.update)
        if last is None:
            self._cache.pop(thread_id, None)
            return state, None
        current = self._cache.get(thread_id)
        if current is None or current[0].seq <= last.seq or cached is None:
            self._keep(thread_id, (last, state))
        return state.copy(), last

    def _keep(self, thread_id: str, entry: tuple[CheckpointRecord, ThreadState]) -> None:
        entry[1].measure()  # once per cached state: its applies and copies keep the size
        self._cache[thread_id] = entry
        self._cache.move_to_end(thread_id)
        while len(self._cache) > CACHE_THREADS:
            self._cache.popitem(last=False)

    async def values_at(self, thread_id: str, seq: int) -> dict[str, Any]:
        """Returns the thread's values at the checkpoint with sequence number `seq`."""
        rows = await self._db.fetch(
            "SELECT update_json FROM checkpoints WHERE thread_id = $1 AND seq <= $2 ORDER BY seq",
            thread_id,
            seq,
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
        rows = await self._db.fetch(
            "SELECT * FROM checkpoints WHERE thread_id = $1 AND seq < $2 ORDER BY seq",
            thread_id,
            bound,
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


async def insert_checkpoint(
    conn: Conn,
    thread_id: str,
    run_id: str,
    step: int,
    source: str,
    update: dict[str, Any],
    now: int,
    *,
    locked: bool = True,
    epoch: int = 0,
) -> CheckpointRecord:
    """Inserts a checkpoint inside a write that holds the thread's row lock; ThreadNotFound
    if the run is gone. The run's row is looked for, not only the thread's: a thread deleted
    while its run unwinds and created again under the same id must not take the run's late
    writes. A run's writes never outlive it."""
    if not locked and await lock_thread(conn, thread_id) is None:
        raise ThreadNotFound(thread_id)
    if (
        await conn.fetchval(
            "SELECT 1 FROM runs WHERE run_id = $1 AND thread_id = $2", run_id, thread_id
        )
        is None
    ):
        raise ThreadNotFound(thread_id)
    checkpoint_id = new_id()
    seq = await conn.fetchval(
        "INSERT INTO checkpoints (checkpoint_id, thread_id, run_id, step, source,"
        " update_json, create_time, epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " RETURNING seq",
        checkpoint_id,
        thread_id,
        run_id,
        step,
        source,
        dumps(update),
        now,
        epoch or None,
    )
    return CheckpointRecord(seq, checkpoint_id, thread_id, run_id, step, source, update, now)
