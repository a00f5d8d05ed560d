"""LangGraph's checkpoints on SQLite: tables `lg_checkpoints`, `lg_blobs` and `lg_writes`.

Each call is one read on the reader connection or one write through the database's grouped
writer, so a checkpoint, its blobs and a task's writes each land whole or not at all.
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
from turnstile_server.store.sqlite.database import Database, Session, landed
from turnstile_server.store.sqlite.langgraph_reads import blob_rows, stored_checkpoint


class SqliteLangGraphCheckpoints:
    """The `LangGraphCheckpoints` part of the storage interface, on SQLite."""

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
        in one transaction."""
        blob_list, write_list = list(blobs), list(writes)
        before = [(f, list(b)) for f, b in earlier]

        def body(s: Session) -> None:
            for earlier_frame, earlier_blobs in before:
                _put(s, earlier_frame, earlier_blobs, [], require_run)
            _put(s, frame, blob_list, write_list, require_run)

        await landed(self._db.submit(body))

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
        """Stores a task's writes against a checkpoint in one transaction."""
        key = (thread_id, checkpoint_ns, checkpoint_id)
        write_list = list(writes)
        await landed(
            self._db.submit(lambda s: _put_writes(s, key, run_id, write_list, require_run))
        )

    async def get(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        known: Mapping[str, str],
    ) -> StoredCheckpoint | None:
        """Reads a checkpoint (the namespace's newest without an id) with its writes and chains."""
        known = dict(known)

        def body(s: Session) -> StoredCheckpoint | None:
            if checkpoint_id is None:
                row = s.one(
                    f"SELECT {FRAME_COLUMNS} FROM lg_checkpoints WHERE thread_id = ?"
                    " AND checkpoint_ns = ? ORDER BY checkpoint_id DESC LIMIT 1",
                    (thread_id, checkpoint_ns),
                )
            else:
                row = s.one(
                    f"SELECT {FRAME_COLUMNS} FROM lg_checkpoints WHERE thread_id = ?"
                    " AND checkpoint_ns = ? AND checkpoint_id = ?",
                    (thread_id, checkpoint_ns, checkpoint_id),
                )
            return None if row is None else stored_checkpoint(s, row, known, set())

        return await self._db.read(body)

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
        where, params = [], []
        for column, value in (
            ("thread_id", thread_id),
            ("checkpoint_ns", checkpoint_ns),
            ("checkpoint_id", checkpoint_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            where.append("checkpoint_id < ?")
            params.append(before)
        sql = f"SELECT {FRAME_COLUMNS} FROM lg_checkpoints"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY checkpoint_id DESC"
        wanted = dict(metadata or {})
        known = dict(known)

        def body(s: Session) -> list[StoredCheckpoint]:
            found: list[StoredCheckpoint] = []
            fetched: set[BlobKey] = set()
            for row in s.all(sql, params):
                if limit is not None and len(found) >= limit:
                    break
                stored_metadata = json.loads(row["metadata"])
                if all(stored_metadata.get(k, _ABSENT) == v for k, v in wanted.items()):
                    found.append(stored_checkpoint(s, row, known, fetched))
            return found

        return await self._db.read(body)

    async def delete_thread(self, thread_id: str) -> None:
        """Deletes a thread's checkpoints, blobs and writes."""
        await landed(self._db.submit(lambda s: delete_langgraph_thread(s, thread_id)))

    async def delete_for_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Deletes the runs' checkpoints, writes and the blobs no remaining checkpoint reads."""
        runs = sorted(set(run_ids))
        if not runs:
            return set()
        return await landed(self._db.submit(lambda s: _delete_for_runs(s, runs)))

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies every row of a thread to another thread id."""
        await landed(self._db.submit(lambda s: _copy_thread(s, source_thread_id, target_thread_id)))

    async def prune(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """Keeps each namespace's newest checkpoint and what it reads, or deletes everything."""
        threads = list(thread_ids)
        await landed(self._db.submit(lambda s: _prune(s, threads, keep_latest)))


_ABSENT = object()


def _check_run(s: Session, thread_id: str, run_id: str) -> None:
    """ThreadNotFound unless the run still exists: a run's writes never outlive it."""
    if s.one("SELECT 1 FROM runs WHERE run_id = ? AND thread_id = ?", (run_id, thread_id)) is None:
        raise ThreadNotFound(thread_id)


def _put(
    s: Session,
    frame: CheckpointFrame,
    blobs: list[BlobRecord],
    writes: list[WriteRecord],
    require_run: bool,
) -> None:
    thread, ns = frame.thread_id, frame.checkpoint_ns
    if require_run:
        _check_run(s, thread, frame.run_id)
    if writes and frame.parent_id is None:
        raise ValueError("a checkpoint without a parent has no writes to store with it")
    appends = [(blob.channel, blob.base) for blob in blobs if blob.kind == "append"]
    if appends:
        # Checked before anything is written, so a failing put changes nothing: an append
        # whose base never landed (its put failed) must not leave a chain that cannot be folded.
        stored = {
            (row[0], row[1]) for row in blob_rows(s, thread, ns, appends, "b.channel, b.version")
        }
        for blob in blobs:
            if blob.kind == "append" and (blob.channel, blob.base) not in stored:
                raise BrokenChain(f"{blob.channel} {blob.version}: base {blob.base} not stored")
    s.execute(
        f"INSERT OR REPLACE INTO lg_checkpoints ({FRAME_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        frame_values(frame),
    )
    if blobs:  # one statement for all of them
        s.execute(
            "INSERT OR IGNORE INTO lg_blobs (thread_id, checkpoint_ns, channel, version, run_id,"
            " kind, base, type, data) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(blobs)),
            [value for blob in blobs for value in blob_values(frame, blob)],
        )
    if writes and frame.parent_id is not None:
        _put_writes(s, (thread, ns, frame.parent_id), frame.run_id, writes, False)


def _put_writes(
    s: Session, key: Key, run_id: str, writes: list[WriteRecord], require_run: bool
) -> None:
    if require_run:
        _check_run(s, key[0], run_id)
    for verb, listed in (
        ("INSERT OR REPLACE", [w for w in writes if w.idx < 0]),
        ("INSERT OR IGNORE", [w for w in writes if w.idx >= 0]),
    ):
        if not listed:
            continue
        s.execute(  # one statement per verb: special writes replace, regular ones are kept
            f"{verb} INTO lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx,"
            " run_id, channel, type, data, task_path) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(listed)),
            [value for write in listed for value in write_values(key, run_id, write)],
        )


def newest_root(s: Session, thread_id: str) -> str | None:
    """The id of the thread's newest root-namespace checkpoint (None: it has none)."""
    row = s.one(
        "SELECT checkpoint_id FROM lg_checkpoints WHERE thread_id = ? AND checkpoint_ns = ''"
        " ORDER BY checkpoint_id DESC LIMIT 1",
        (thread_id,),
    )
    return None if row is None else str(row[0])


def put_staged(s: Session, update: StagedUpdate) -> None:
    """Writes an update's checkpoints and writes inside a write (`Threads.apply_update`)."""
    for frame, blobs in update.puts:
        _put(s, frame, blobs, [], False)
    for ns, checkpoint_id, run_id, writes in update.writes:
        _put_writes(s, (update.thread_id, ns, checkpoint_id), run_id, writes, False)


def delete_langgraph_thread(s: Session, thread_id: str) -> None:
    """Deletes a thread's LangGraph rows inside a write (also when the thread is deleted)."""
    for table in ("lg_checkpoints", "lg_blobs", "lg_writes"):
        s.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))


def delete_langgraph_runs(s: Session, runs: list[str]) -> set[str]:
    """Deletes the runs' LangGraph rows inside a write (also when a run is rolled back)."""
    return _delete_for_runs(s, runs)


def _delete_for_runs(s: Session, runs: list[str]) -> set[str]:
    marks = ", ".join("?" * len(runs))
    threads: set[str] = set()
    # A run's blobs are put with its checkpoints, so these name every thread the runs wrote.
    for table in ("lg_checkpoints", "lg_writes"):
        rows = s.all(f"SELECT DISTINCT thread_id FROM {table} WHERE run_id IN ({marks})", runs)
        threads.update(row[0] for row in rows)
    s.execute(f"DELETE FROM lg_checkpoints WHERE run_id IN ({marks})", runs)
    s.execute(f"DELETE FROM lg_writes WHERE run_id IN ({marks})", runs)
    for thread in sorted(threads):
        _drop_orphan_writes(s, thread)
        _drop_unread_blobs(s, thread, set(runs))
    return threads


def _copy_thread(s: Session, source: str, target: str) -> None:
    s.execute(
        f"INSERT OR IGNORE INTO lg_checkpoints ({FRAME_COLUMNS}) SELECT ?, checkpoint_ns,"
        " checkpoint_id, parent_id, run_id, type, frame, versions, metadata"
        " FROM lg_checkpoints WHERE thread_id = ?",
        (target, source),
    )
    s.execute(
        "INSERT OR IGNORE INTO lg_blobs (thread_id, checkpoint_ns, channel, version, run_id,"
        " kind, base, type, data) SELECT ?, checkpoint_ns, channel, version, run_id, kind,"
        " base, type, data FROM lg_blobs WHERE thread_id = ?",
        (target, source),
    )
    s.execute(
        "INSERT OR IGNORE INTO lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,"
        " idx, run_id, channel, type, data, task_path) SELECT ?, checkpoint_ns, checkpoint_id,"
        " task_id, idx, run_id, channel, type, data, task_path FROM lg_writes"
        " WHERE thread_id = ?",
        (target, source),
    )


def _prune(s: Session, threads: list[str], keep_latest: bool) -> None:
    for thread in threads:
        if not keep_latest:
            delete_langgraph_thread(s, thread)
            continue
        s.execute(
            "DELETE FROM lg_checkpoints WHERE thread_id = ? AND checkpoint_id < (SELECT"
            " MAX(c.checkpoint_id) FROM lg_checkpoints c WHERE c.thread_id ="
            " lg_checkpoints.thread_id AND c.checkpoint_ns = lg_checkpoints.checkpoint_ns)",
            (thread,),
        )
        _drop_orphan_writes(s, thread)
        _drop_unread_blobs(s, thread, None)


def _drop_orphan_writes(s: Session, thread: str) -> None:
    s.execute(
        "DELETE FROM lg_writes WHERE thread_id = ? AND NOT EXISTS (SELECT 1 FROM lg_checkpoints c"
        " WHERE c.thread_id = lg_writes.thread_id AND c.checkpoint_ns = lg_writes.checkpoint_ns"
        " AND c.checkpoint_id = lg_writes.checkpoint_id)",
        (thread,),
    )


def _drop_unread_blobs(s: Session, thread: str, runs: set[str] | None) -> None:
    """Deletes the thread's blobs (of `runs`, or any) that no checkpoint left reads, directly or
    as the base of a blob it reads."""
    blobs = s.all(
        "SELECT checkpoint_ns, channel, version, base, run_id FROM lg_blobs WHERE thread_id = ?",
        (thread,),
    )
    checkpoints = s.all(
        "SELECT checkpoint_ns, versions FROM lg_checkpoints WHERE thread_id = ?", (thread,)
    )
    for ns, channel, version in unread_blobs(blobs, checkpoints, runs):
        s.execute(
            "DELETE FROM lg_blobs WHERE thread_id = ? AND checkpoint_ns = ? AND channel = ?"
            " AND version = ?",
            (thread, ns, channel, version),
        )
