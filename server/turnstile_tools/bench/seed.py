"""A database full of history for B6: threads, their runs and checkpoints, bulk-inserted.

The schema comes from the server's own migrations (`open_store`); rows then go in with
`executemany` in one transaction, in chunks of threads so memory stays flat.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

from turnstile_server.store import open_store

CHECKPOINTS_PER_RUN = 5
"""Like the `agent` graph: the input, then four steps."""
CHUNK_THREADS = 5000


async def seed_database(path: Path, threads: int, checkpoints: int) -> None:
    """Creates the database at `path` holding `threads` idle threads and `checkpoints`."""
    store = await open_store(str(path))
    await store.close()
    await asyncio.to_thread(_insert, path, threads, checkpoints)


def _ids(count: int) -> list[str]:
    """Random version-4 UUIDs, faster than `uuid.uuid4()` a million times."""
    raw = os.urandom(16 * count).hex()
    return [
        f"{raw[i : i + 8]}-{raw[i + 8 : i + 12]}-4{raw[i + 13 : i + 16]}"
        f"-a{raw[i + 17 : i + 20]}-{raw[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


def _insert(path: Path, threads: int, checkpoints: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN")
        now = int(time.time() * 1_000_000)
        per_thread, extra = divmod(checkpoints, threads)
        for first in range(0, threads, CHUNK_THREADS):
            count = min(CHUNK_THREADS, threads - first)
            _insert_chunk(conn, now, first, count, per_thread, extra)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def _insert_chunk(
    conn: sqlite3.Connection, now: int, first: int, count: int, per_thread: int, extra: int
) -> None:
    thread_ids = _ids(count)
    thread_rows: list[tuple[str, int, int]] = []
    run_rows: list[tuple[str, str, int, int, int, int]] = []
    checkpoint_rows: list[tuple[str, str, str, int, str, str, int]] = []
    sizes = [per_thread + (1 if first + i < extra else 0) for i in range(count)]
    checkpoint_ids = _ids(sum(sizes))
    message_ids = _ids(sum(sizes))
    run_ids = _ids(sum(-(-size // CHECKPOINTS_PER_RUN) for size in sizes))
    next_checkpoint = next_run = 0
    for thread_id, size in zip(thread_ids, sizes, strict=True):
        thread_rows.append((thread_id, now, now))
        run_id = ""
        for index in range(size):
            step = index % CHECKPOINTS_PER_RUN
            if step == 0:
                run_id = run_ids[next_run]
                next_run += 1
                run_rows.append((run_id, thread_id, now, now, now, now))
            kind = "human" if step == 0 else "ai"
            update = (
                f'{{"messages":[{{"type":"{kind}","content":"message {index} of a seeded'
                f' thread","id":"{message_ids[next_checkpoint]}"}}]}}'
            )
            checkpoint_rows.append(
                (
                    checkpoint_ids[next_checkpoint],
                    thread_id,
                    run_id,
                    step,
                    "input" if step == 0 else "step",
                    update,
                    now,
                )
            )
            next_checkpoint += 1
    conn.executemany(
        "INSERT INTO threads (thread_id, metadata, status, create_time, update_time)"
        " VALUES (?, '{}', 'idle', ?, ?)",
        thread_rows,
    )
    conn.executemany(
        "INSERT INTO runs (run_id, thread_id, assistant_id, graph_id, status,"
        " multitask_strategy, input, create_time, start_time, end_time, not_before, attempt)"
        " VALUES (?, ?, 'echo', 'echo', 'success', 'enqueue', '{}', ?, ?, ?, ?, 1)",
        run_rows,
    )
    conn.executemany(
        "INSERT INTO checkpoints (checkpoint_id, thread_id, run_id, step, source, update_json,"
        " create_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
        checkpoint_rows,
    )
