"""LangGraph's checkpoints on PostgreSQL: tables `lg_checkpoints`, `lg_blobs` and `lg_writes`.

Each call is one transaction (a write) or one read-only snapshot (a read), so a checkpoint,
its blobs and a task's writes each land whole or not at all, as on SQLite
(`store/sqlite/langgraph.py`, whose semantics this mirrors statement for statement).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from turnstile_server.errors import ThreadNotFound
from turnstile_server.store.langgraph_checkpoints import (
    BlobRecord,
    CheckpointFrame,
    StagedUpdate,
    StoredCheckpoint,
    WriteRecord,
)
from turnstile_server.store.langgraph_rows import (
    FRAME_COLUMNS,
    BlobKey,
    BrokenChain,
    Key,
    blob_values,
    frame_values,
    unread_blobs,
    write_values,
)
from turnstile_server.store.postgres.database import Conn, Database
from turnstile_server.store.postgres.fence import fence
from turnstile_server.store.postgres.langgraph_reads import blob_rows, stored_checkpoint
from turnstile_server.store.postgres.rows import Params


class PostgresLangGraphCheckpoints:
    """The `LangGraphCheckpoints` part of the storage interface, on PostgreSQL."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(
        self,
        frame: CheckpointFrame,
        blobs: Sequence[BlobRecord],
        *,
        writes: Sequence[WriteRecord] = (),
        earlier: Sequence[tuple[CheckpointFrame, Sequence[BlobRecord]]] = (),
        require_run: bool = False,
        epoch: int = 0,
    ) -> None:
        """Stores earlier checkpoints, then a checkpoint, its new blobs and its parent's writes,
        in one transaction (with
        `require_run`, only while the run's row exists: see `_check_run`; with `epoch`, only
        while that attempt holds the run: `fence.py`)."""
        blob_list, write_list = list(blobs), list(writes)
        before = [(f, list(b)) for f, b in earlier]

        async def put(conn: Conn) -> None:
            if write_list and frame.parent_id is None:
                raise ValueError("a checkpoint without a parent has no writes to store")
            await fence(conn, frame.run_id, epoch)
            for earlier_frame, earlier_blobs in before:
                await _put(conn, earlier_frame, earlier_blobs, require_run)
            await _put(conn, frame, blob_list, require_run)
            if write_list and frame.parent_id is not None:
                key = (frame.thread_id, frame.checkpoint_ns, frame.parent_id)
                await _put_writes(conn, key, frame.run_id, write_list, False)

        await self._db.write(put)

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        run_id: str,
        writes: Sequence[WriteRecord],
        *,
        require_run: bool = False,
        epoch: int = 0,
    ) -> None:
        """Stores a task's writes against a checkpoint in one transaction (`require_run` and
        `epoch` as for `put`)."""
        key = (thread_id, checkpoint_ns, checkpoint_id)
        write_list = list(writes)

        async def put_writes(conn: Conn) -> None:
            await fence(conn, run_id, epoch)
            await _put_writes(conn, key, run_id, write_list, require_run)

        await self._db.write(put_writes)

    async def get(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        known: Mapping[str, str],
    ) -> StoredCheckpoint | None:
        """Reads a checkpoint (the namespace's newest without an id) with its writes and chains."""
        known = dict(known)

        async def body(conn: Conn) -> StoredCheckpoint | None:
            if checkpoint_id is None:
                row = await conn.fetchrow(
                    f"SELECT {FRAME_COLUMNS} FROM lg_checkpoints WHERE thread_id = $1"
                    " AND checkpoint_ns = $2 ORDER BY checkpoint_id DESC LIMIT 1",
                    thread_id,
                    checkpoint_ns,
                )
            else:
                row = await conn.fetchrow(
                    f"SELECT {FRAME_COLUMNS} FROM lg_checkpoints WHERE thread_id = $1"
                    " AND checkpoint_ns = $2 AND checkpoint_id = $3",
                    thread_id,
                    checkpoint_ns,
                    checkpoint_id,
                )
            return None if row is None else await stored_checkpoint(conn, row, known, set())

        return await self._db.snapshot(body)

    async def list(
        self,
        thread_id: str | None,
        checkpoint_ns: str | None,
        *,
        checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | None,
        before: str | None,
        limit: int | None,
        known: Mapping[str, str],
    ) -> list[StoredCheckpoint]:
        """Reads matching checkpoints newest first, each with its writes and chains."""
        params = Params()
        where = []
        for column, value in (
            ("thread_id", thread_id),
            ("checkpoint_ns", checkpoint_ns),
            ("checkpoint_id", checkpoint_id),
        ):
            if value is not None:
                where.append(f"{column} = {params.add(value)}")
        if before is not None:
            where.append(f"checkpoint_id < {params.add(before)}")
        sql = f"SELECT {FRAME_COLUMNS} FROM lg_checkpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY checkpoint_id DESC"
        wanted = dict(metadata or {})
        known = dict(known)

        async def body(conn: Conn) -> list[StoredCheckpoint]:
            found: list[StoredCheckpoint] = []
            fetched: set[BlobKey] = set()
            for row in await conn.fetch(sql, *params.values):
                if limit is not None and len(found) >= limit:
                    break
                stored_metadata = json.loads(row["metadata"])
                if all(stored_metadata.get(k, _ABSENT) == v for k, v in wanted.items()):
                    found.append(await stored_checkpoint(conn, row, known, fetched))
            return found

        return await self._db.snapshot(body)

    async def delete_thread(self, thread_id: str) -> None:
        """Deletes a thread's checkpoints, blobs and writes."""
        await self._db.write(lambda conn: delete_langgraph_thread(conn, thread_id))

    async def delete_for_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Deletes the runs' checkpoints, writes and the blobs no remaining checkpoint reads."""
        runs = sorted(set(run_ids))
        if not runs:
            return set()
        return await self._db.write(lambda conn: delete_langgraph_runs(conn, runs))

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies every row of a thread to another thread id."""
        await self._db.write(lambda conn: _copy_thread(conn, source_thread_id, target_thread_id))

    async def prune(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """Keeps each namespace's newest checkpoint and what it reads, or deletes everything."""
        threads = list(thread_ids)
        await self._db.write(lambda conn: _prune(conn, threads, keep_latest))


_ABSENT = object()


async def _check_run(conn: Conn, thread_id: str, run_id: str) -> None:
    """ThreadNotFound unless the run still exists; its row is then held (FOR SHARE) until the
    write commits, so a rollback or a thread deletion, which delete the row, wait for the write
    and then delete what it wrote: a run's writes never outlive it. (FOR SHARE, not the thread
    lock: a superstep's tasks put their writes concurrently.)"""
    found = await conn.fetchval(
        "SELECT 1 FROM runs WHERE run_id = $1 AND thread_id = $2 FOR SHARE", run_id, thread_id
    )
    if found is None:
        raise ThreadNotFound(thread_id)


async def newest_root(conn: Conn, thread_id: str) -> str | None:
    """The id of the thread's newest root-namespace checkpoint (None: it has none)."""
    found = await conn.fetchval(
        "SELECT checkpoint_id FROM lg_checkpoints WHERE thread_id = $1 AND checkpoint_ns = ''"
        " ORDER BY checkpoint_id DESC LIMIT 1",
        thread_id,
    )
    return None if found is None else str(found)


async def put_staged(conn: Conn, update: StagedUpdate) -> None:
    """Writes an update's checkpoints and writes inside a write (`Threads.apply_update`)."""
    for frame, blobs in update.puts:
        await _put(conn, frame, blobs, False)
    for ns, checkpoint_id, run_id, writes in update.writes:
        await _put_writes(conn, (update.thread_id, ns, checkpoint_id), run_id, writes, False)


async def _put(
    conn: Conn, frame: CheckpointFrame, blobs: list[BlobRecord], require_run: bool
) -> None:
    thread, ns = frame.thread_id, frame.checkpoint_ns
    if require_run:
        await _check_run(conn, thread, frame.run_id)
    appends = [(blob.channel, blob.base) for blob in blobs if blob.kind == "append"]
    if appends:
        # Checked before anything is written: an append whose base never landed must not
        # leave a chain that cannot be folded.
        stored = {(r["channel"], r["version"]) for r in await blob_rows(conn, thread, ns, appends)}
        for blob in blobs:
            if blob.kind == "append" and (blob.channel, blob.base) not in stored:
                raise BrokenChain(f"{blob.channel} {blob.version}: base {blob.base} not stored")
    await conn.execute(
        f"INSERT INTO lg_checkpoints ({FRAME_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET"
        " parent_id = EXCLUDED.parent_id, run_id = EXCLUDED.run_id, type = EXCLUDED.type,"
        " frame = EXCLUDED.frame, versions = EXCLUDED.versions, metadata = EXCLUDED.metadata",
        *frame_values(frame),
    )
    if blobs:
        await conn.executemany(
            "INSERT INTO lg_blobs (thread_id, checkpoint_ns, channel, version, run_id,"
            " kind, base, type, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT DO NOTHING",
            [blob_values(frame, blob) for blob in blobs],
        )


async def _put_writes(
    conn: Conn, key: Key, run_id: str, writes: list[WriteRecord], require_run: bool
) -> None:
    if require_run:
        await _check_run(conn, key[0], run_id)
    for special in (True, False):
        listed = [write for write in writes if (write.idx < 0) == special]
        if not listed:
            continue
        conflict = (
            "DO UPDATE SET run_id = EXCLUDED.run_id, channel = EXCLUDED.channel,"
            " type = EXCLUDED.type, data = EXCLUDED.data, task_path = EXCLUDED.task_path"
            if special
            else "DO NOTHING"
        )
        await conn.executemany(  # special writes replace, regular ones are kept
            "INSERT INTO lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx,"
            " run_id, channel, type, data, task_path)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            f" ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) {conflict}",
            [write_values(key, run_id, write) for write in listed],
        )


async def delete_langgraph_thread(conn: Conn, thread_id: str) -> None:
    """Deletes a thread's LangGraph rows inside a write (also when the thread is deleted)."""
    for table in ("lg_checkpoints", "lg_blobs", "lg_writes"):
        await conn.execute(f"DELETE FROM {table} WHERE thread_id = $1", thread_id)


async def delete_langgraph_runs(conn: Conn, runs: list[str]) -> set[str]:
    """Deletes the runs' LangGraph checkpoints and writes inside a write, and the blobs that
    no checkpoint left reads; returns the threads touched."""
    threads: set[str] = set()
    # A run's blobs are put with its checkpoints, so these name every thread the runs wrote.
    for table in ("lg_checkpoints", "lg_writes"):
        rows = await conn.fetch(
            f"SELECT DISTINCT thread_id FROM {table} WHERE run_id = ANY($1::text[])", runs
        )
        threads.update(row[0] for row in rows)
    await conn.execute("DELETE FROM lg_checkpoints WHERE run_id = ANY($1::text[])", runs)
    await conn.execute("DELETE FROM lg_writes WHERE run_id = ANY($1::text[])", runs)
    for thread in sorted(threads):
        await _drop_orphan_writes(conn, thread)
        await _drop_unread_blobs(conn, thread, set(runs))
    return threads


async def _copy_thread(conn: Conn, source: str, target: str) -> None:
    await conn.execute(
        f"INSERT INTO lg_checkpoints ({FRAME_COLUMNS}) SELECT $1, checkpoint_ns,"
        " checkpoint_id, parent_id, run_id, type, frame, versions, metadata"
        " FROM lg_checkpoints WHERE thread_id = $2 ON CONFLICT DO NOTHING",
        target,
        source,
    )
    await conn.execute(
        "INSERT INTO lg_blobs (thread_id, checkpoint_ns, channel, version, run_id,"
        " kind, base, type, data) SELECT $1, checkpoint_ns, channel, version, run_id, kind,"
        " base, type, data FROM lg_blobs WHERE thread_id = $2 ON CONFLICT DO NOTHING",
        target,
        source,
    )
    await conn.execute(
        "INSERT INTO lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,"
        " idx, run_id, channel, type, data, task_path) SELECT $1, checkpoint_ns, checkpoint_id,"
        " task_id, idx, run_id, channel, type, data, task_path FROM lg_writes"
        " WHERE thread_id = $2 ON CONFLICT DO NOTHING",
        target,
        source,
    )


async def _prune(conn: Conn, threads: list[str], keep_latest: bool) -> None:
    for thread in threads:
        if not keep_latest:
            await delete_langgraph_thread(conn, thread)
            continue
        await conn.execute(
            "DELETE FROM lg_checkpoints WHERE thread_id = $1 AND checkpoint_id < (SELECT"
            " MAX(c.checkpoint_id) FROM lg_checkpoints c WHERE c.thread_id ="
            " lg_checkpoints.thread_id AND c.checkpoint_ns = lg_checkpoints.checkpoint_ns)",
            thread,
        )
        await _drop_orphan_writes(conn, thread)
        await _drop_unread_blobs(conn, thread, None)


async def _drop_orphan_writes(conn: Conn, thread: str) -> None:
    await conn.execute(
        "DELETE FROM lg_writes WHERE thread_id = $1 AND NOT EXISTS (SELECT 1 FROM"
        " lg_checkpoints c WHERE c.thread_id = lg_writes.thread_id AND c.checkpoint_ns ="
        " lg_writes.checkpoint_ns AND c.checkpoint_id = lg_writes.checkpoint_id)",
        thread,
    )


async def _drop_unread_blobs(conn: Conn, thread: str, runs: set[str] | None) -> None:
    """Deletes the thread's blobs (of `runs`, or any) that no checkpoint left reads, directly or
    as the base of a blob it reads."""
    blobs = await conn.fetch(
        "SELECT checkpoint_ns, channel, version, base, run_id FROM lg_blobs WHERE thread_id = $1",
        thread,
    )
    checkpoints = await conn.fetch(
        "SELECT checkpoint_ns, versions FROM lg_checkpoints WHERE thread_id = $1", thread
    )
    unread = [(thread, *key) for key in unread_blobs(blobs, checkpoints, runs)]
    if unread:
        await conn.executemany(
            "DELETE FROM lg_blobs WHERE thread_id = $1 AND checkpoint_ns = $2 AND channel = $3"
            " AND version = $4",
            unread,
        )
