"""Threads: create, read, list, update metadata, delete."""

from __future__ import annotations

import builtins
from dataclasses import replace
from typing import Any

from turnstile_server.errors import AlreadyExists, ThreadBusy, ThreadNotFound
from turnstile_server.store.langgraph_checkpoints import BaseMoved, StagedUpdate
from turnstile_server.store.postgres.database import Conn, Database
from turnstile_server.store.postgres.langgraph import (
    delete_langgraph_thread,
    newest_root,
    put_staged,
)
from turnstile_server.store.postgres.leases import (
    deleting_running,
    notify_cancel,
    notify_ended,
)
from turnstile_server.store.postgres.locks import lock_thread
from turnstile_server.store.postgres.rows import (
    Params,
    dumps,
    filterable,
    metadata_filter,
    thread_from_row,
)
from turnstile_server.store.postgres.run_writes import inflight_runs
from turnstile_server.store.records import RunRecord, ThreadRecord, now_us

_THREAD_COLUMNS = "thread_id, metadata, status, create_time, update_time, interrupts"


class Threads:
    """The `threads` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        thread_id: str,
        metadata: dict[str, Any],
        *,
        if_exists: str = "raise",
        request_id: str = "",
    ) -> ThreadRecord:
        """Creates a thread; a repeated `request_id` or `if_exists="do_nothing"` returns it.
        A concurrent create of the same id or request id loses the insert and is applied
        again (`Database`), so it answers as the second one would."""
        now = now_us()

        async def create(conn: Conn) -> ThreadRecord:
            if request_id:
                row = await conn.fetchrow(
                    f"SELECT {_THREAD_COLUMNS} FROM threads WHERE request_id = $1", request_id
                )
                if row is not None:
                    return thread_from_row(row)
            row = await conn.fetchrow(
                f"SELECT {_THREAD_COLUMNS} FROM threads WHERE thread_id = $1", thread_id
            )
            if row is not None:
                if if_exists == "do_nothing":
                    return thread_from_row(row)
                raise AlreadyExists(
                    f"thread {thread_id} already exists", metadata={"thread_id": thread_id}
                )
            await conn.execute(
                "INSERT INTO threads (thread_id, metadata, status, create_time, update_time,"
                " request_id) VALUES ($1, $2, 'idle', $3, $3, $4)",
                thread_id,
                filterable(metadata),
                now,
                request_id or None,
            )
            return ThreadRecord(thread_id, dict(metadata), "idle", now, now)

        return await self._db.write(create)

    async def get(self, thread_id: str) -> ThreadRecord:
        """Returns the thread or raises ThreadNotFound."""
        row = await self._db.fetchrow(
            f"SELECT {_THREAD_COLUMNS} FROM threads WHERE thread_id = $1", thread_id
        )
        if row is None:
            raise ThreadNotFound(thread_id)
        return thread_from_row(row)

    async def next_watch_epoch(self, thread_id: str) -> int:
        """Returns the thread's watch epoch (0 at first) and bumps it for the next caller."""
        epoch = await self._db.write(
            lambda conn: conn.fetchval(
                "UPDATE threads SET watch_epoch = watch_epoch + 1 WHERE thread_id = $1"
                " RETURNING watch_epoch - 1",
                thread_id,
            )
        )
        if epoch is None:
            raise ThreadNotFound(thread_id)
        return int(epoch)

    async def list(
        self,
        *,
        status: str | None,
        metadata: dict[str, Any],
        limit: int,
        before: int | None,
        interruption: str | None = None,
    ) -> tuple[list[ThreadRecord], int | None]:
        """Lists threads newest first; returns the page and the cursor of the next one
        (`interruption`: only the interrupted threads waiting for input, or cancelled)."""
        params = Params()
        where = metadata_filter("metadata", metadata, params)
        if status:
            where += f" AND status = {params.add(status)}"
        if interruption:
            waits = "NOT NULL" if interruption == "awaiting_input" else "NULL"
            where += f" AND status = 'interrupted' AND interrupts IS {waits}"
        if before is not None:
            where += f" AND seq < {params.add(before)}"
        rows = await self._db.fetch(
            f"SELECT seq, {_THREAD_COLUMNS} FROM threads WHERE {where}"
            f" ORDER BY seq DESC LIMIT {params.add(limit + 1)}",
            *params.values,
        )
        page = rows[:limit]
        cursor = page[-1]["seq"] if len(rows) > limit else None
        return [thread_from_row(r) for r in page], cursor

    async def apply_update(self, update: StagedUpdate) -> None:
        """Applies an UpdateThreadState in one transaction on the thread's row lock, the one
        admission takes (see `Store.threads`)."""
        now = now_us()
        thread_id = update.thread_id

        async def apply(conn: Conn) -> None:
            status = await lock_thread(conn, thread_id)
            if status is None:
                raise ThreadNotFound(thread_id)
            if status == "busy":  # a run's writes and the update's would fork the history
                inflight = await inflight_runs(conn, thread_id)
                raise ThreadBusy(thread_id, [run.run_id for run in inflight])
            if await newest_root(conn, thread_id) != update.base:
                raise BaseMoved(thread_id)
            await put_staged(conn, update)
            await conn.execute(
                "UPDATE threads SET status = $1, interrupts = $2, update_time = $3"
                " WHERE thread_id = $4",
                "idle" if update.interrupts is None else "interrupted",
                None if update.interrupts is None else dumps(update.interrupts),
                now,
                thread_id,
            )

        await self._db.write(apply)

    async def update_metadata(self, thread_id: str, metadata: dict[str, Any]) -> ThreadRecord:
        """Merges `metadata` into the thread's metadata."""
        now = now_us()

        async def update(conn: Conn) -> ThreadRecord:
            row = await conn.fetchrow(
                f"SELECT {_THREAD_COLUMNS} FROM threads WHERE thread_id = $1 FOR UPDATE",
                thread_id,
            )
            if row is None:
                raise ThreadNotFound(thread_id)
            thread = thread_from_row(row)
            merged = {**thread.metadata, **metadata}
            await conn.execute(
                "UPDATE threads SET metadata = $1, update_time = $2 WHERE thread_id = $3",
                filterable(merged),
                now,
                thread_id,
            )
            return replace(thread, metadata=merged, update_time=now)

        return await self._db.write(update)

    async def delete(self, thread_id: str) -> builtins.list[RunRecord]:
        """Deletes the thread, its runs and checkpoints (and its LangGraph rows); returns its
        inflight runs, as ended."""
        now = now_us()

        async def delete(conn: Conn) -> builtins.list[RunRecord]:
            if await lock_thread(conn, thread_id) is None:
                raise ThreadNotFound(thread_id)
            runs = await inflight_runs(conn, thread_id)
            # Their owners, on any replica, stop them (`leases.py`); until they have, a
            # DeleteThread answered on another replica waits (`leases.unwinding`).
            await deleting_running(conn, thread_id)
            await notify_cancel(conn, [run for run in runs if run.status == "running"])
            await notify_ended(conn, [run.run_id for run in runs])  # gone, to their waiters
            await conn.execute("DELETE FROM threads WHERE thread_id = $1", thread_id)
            # LangGraph's rows name the thread without a foreign key: deleted alongside.
            await delete_langgraph_thread(conn, thread_id)
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

        return await self._db.write(delete)
