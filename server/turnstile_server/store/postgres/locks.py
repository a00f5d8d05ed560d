"""The thread row as the mutex of every write that changes a thread's runs or checkpoints."""

from __future__ import annotations

from turnstile_server.store.postgres.database import Conn


async def lock_thread(conn: Conn, thread_id: str) -> str | None:
    """Locks the thread's row (`SELECT ... FOR UPDATE`) until the transaction ends; returns
    its status, or None when there is no such thread.

    Admission, start, finish, cancel, recovery, deletion and checkpoint writes each take it
    first, before any run row, so they are serialised per thread across every process on the
    database and never deadlock each other. Under it, a thread's checkpoints are numbered in
    the order they commit, which the state cache relies on (`checkpoints.py`)."""
    status: str | None = await conn.fetchval(
        "SELECT status FROM threads WHERE thread_id = $1 FOR UPDATE", thread_id
    )
    return status
