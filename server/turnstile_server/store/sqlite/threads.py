"""Threads: create, read, list, update metadata, delete."""

from __future__ import annotations

import builtins
from dataclasses import replace
from typing import Any

from turnstile_server.errors import AlreadyExists, ThreadBusy, ThreadNotFound
from turnstile_server.store.langgraph_checkpoints import BaseMoved, StagedUpdate
from turnstile_server.store.records import RunRecord, ThreadRecord, now_us
from turnstile_server.store.sqlite.checkpoints import Checkpoints
from turnstile_server.store.sqlite.database import Database, Session
from turnstile_server.store.sqlite.langgraph import (
    delete_langgraph_thread,
    newest_root,
    put_staged,
)
from turnstile_server.store.sqlite.rows import (
    dumps,
    metadata_filter,
    thread_from_row,
)
from turnstile_server.store.sqlite.run_writes import inflight_runs


class Threads:
    """The `threads` table."""

    def __init__(self, db: Database, checkpoints: Checkpoints) -> None:
        self._db = db
        self._checkpoints = checkpoints  # its cached state goes with a deleted thread

    async def create(
        self,
        thread_id: str,
        metadata: dict[str, Any],
        *,
        if_exists: str = "raise",
        request_id: str = "",
    ) -> ThreadRecord:
        """Creates a thread; a repeated `request_id` or `if_exists="do_nothing"` returns it."""
        now = now_us()

        def create(conn: Session) -> ThreadRecord:
            if request_id:
                row = conn.one("SELECT * FROM threads WHERE request_id = ?", (request_id,))
                if row is not None:
                    return thread_from_row(row)
            row = conn.one("SELECT * FROM threads WHERE thread_id = ?", (thread_id,))
            if row is not None:
                if if_exists == "do_nothing":
                    return thread_from_row(row)
                raise AlreadyExists(
                    f"thread {thread_id} already exists", metadata={"thread_id": thread_id}
                )
            conn.execute(
                "INSERT INTO threads (thread_id, metadata, status, create_time, update_time,"
                " request_id) VALUES (?, ?, 'idle', ?, ?, ?)",
                (thread_id, dumps(metadata), now, now, request_id or None),
            )
            return ThreadRecord(thread_id, dict(metadata), "idle", now, now)

        return await self._db.write(create)

    async def get(self, thread_id: str) -> ThreadRecord:
        """Returns the thread or raises ThreadNotFound."""
        row = await self._db.fetchone("SELECT * FROM threads WHERE thread_id = ?", (thread_id,))
        if row is None:
            raise ThreadNotFound(thread_id)
        return thread_from_row(row)

    async def next_watch_epoch(self, thread_id: str) -> int:
        """Returns the thread's watch epoch (0 at first) and bumps it for the next caller."""
        row = await self._db.write(
            lambda conn: conn.one(
                "UPDATE threads SET watch_epoch = watch_epoch + 1 WHERE thread_id = ?"
                " RETURNING watch_epoch - 1",
                (thread_id,),
            )
        )
        if row is None:
            raise ThreadNotFound(thread_id)
        return int(row[0])

    async def list(
        self,
        *,
        status: str | None,
        metadata: dict[str, Any],
        limit: int,
        before: int | None,
        interruption: str | None = None,
    ) -> tuple[list[ThreadRecord], int | None]:
        """Lists threads newest first; returns the page and the cursor of the next one."""
        where, params = metadata_filter("metadata", metadata)
        if status:
            where += " AND status = ?"
            params.append(status)
        if interruption:
            waits = "NOT NULL" if interruption == "awaiting_input" else "NULL"
            where += f" AND status = 'interrupted' AND interrupts IS {waits}"
        if before is not None:
            where += " AND rowid < ?"
            params.append(before)
        rows = await self._db.fetchall(
            f"SELECT rowid AS cursor, * FROM threads WHERE {where} ORDER BY rowid DESC LIMIT ?",
            [*params, limit + 1],
        )
        page = rows[:limit]
        cursor = page[-1]["cursor"] if len(rows) > limit else None
        return [thread_from_row(r) for r in page], cursor

    async def update_metadata(self, thread_id: str, metadata: dict[str, Any]) -> ThreadRecord:
        """Merges `metadata` into the thread's metadata."""
        now = now_us()

        def update(conn: Session) -> ThreadRecord:
            row = conn.one("SELECT * FROM threads WHERE thread_id = ?", (thread_id,))
            if row is None:
                raise ThreadNotFound(thread_id)
            thread = thread_from_row(row)
            merged = {**thread.metadata, **metadata}
            conn.execute(
                "UPDATE threads SET metadata = ?, update_time = ? WHERE thread_id = ?",
                (dumps(merged), now, thread_id),
            )
            return replace(thread, metadata=merged, update_time=now)

        return await self._db.write(update)

    async def apply_update(self, update: StagedUpdate) -> None:
        """Applies an UpdateThreadState in one write transaction (see `Store.threads`)."""
        now = now_us()
        thread_id = update.thread_id

        def apply(conn: Session) -> None:
            row = conn.one("SELECT status FROM threads WHERE thread_id = ?", (thread_id,))
            if row is None:
                raise ThreadNotFound(thread_id)
            if row[0] == "busy":  # a run's writes and the update's would fork the history
                raise ThreadBusy(thread_id, [run.run_id for run in inflight_runs(conn, thread_id)])
            if newest_root(conn, thread_id) != update.base:
                raise BaseMoved(thread_id)
            put_staged(conn, update)
            conn.execute(
                "UPDATE threads SET status = ?, interrupts = ?, update_time = ?"
                " WHERE thread_id = ?",
                (
                    "idle" if update.interrupts is None else "interrupted",
                    None if update.interrupts is None else dumps(update.interrupts),
                    now,
                    thread_id,
                ),
            )

        await self._db.write(apply)

    async def delete(self, thread_id: str) -> builtins.list[RunRecord]:
        """Deletes the thread, its runs and checkpoints; returns its inflight runs, as ended."""
        now = now_us()

        def delete(conn: Session) -> builtins.list[RunRecord]:
            if conn.one("SELECT 1 FROM threads WHERE thread_id = ?", (thread_id,)) is None:
                raise ThreadNotFound(thread_id)
            runs = inflight_runs(conn, thread_id)
            conn.execute("DELETE FROM threads WHERE thread_id = ?", (thread_id,))
            # LangGraph's rows name the thread without a foreign key: deleted alongside.
            delete_langgraph_thread(conn, thread_id)
            return [
                replace(
                    run,
                    status="interrupted",
                    end_time=now,
                    cancel_reason="thread deleted",
                    queue_position=None,
                )
                for run in runs
            ]

        inflight = await self._db.write(delete)
        self._checkpoints.forget(thread_id)
        return inflight
