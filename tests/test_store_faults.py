"""Store faults, unit by unit: which SQLite errors are retried, where, how often, and what the
rest become (`StoreUnavailable`, gRPC `UNAVAILABLE`). End to end: `test_store_faults_e2e.py`."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.faults import Rule, ScriptedFaults, inject
from tests.support import eventually
from turnstile_server.api.rpc_errors import code_of
from turnstile_server.errors import StoreUnavailable, Unavailable
from turnstile_server.store.sqlite import Database, SqliteStore
from turnstile_server.store.sqlite.database import Session
from turnstile_server.store.sqlite.retry import RetryPolicy, error_name, is_transient

pytestmark = pytest.mark.timeout(30)

FAST = RetryPolicy(attempts=4, first_wait=0.001, max_wait=0.004, busy_timeout_ms=20)
INSERT = "INSERT INTO threads"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(await Database.open(tmp_path / "faults.db", policy=FAST))
    yield opened
    await opened.close()


async def insert_thread(db: Database, thread_id: str, *, also: str | None = None) -> int:
    """Inserts a thread (and optionally a second) in one transaction; returns how often the
    transaction's block ran."""
    runs = 0

    def insert(conn: Session) -> None:
        nonlocal runs
        runs += 1
        for tid in [thread_id] if also is None else [thread_id, also]:
            conn.execute(
                "INSERT INTO threads (thread_id, status, create_time, update_time)"
                " VALUES (?, 'idle', 0, 0)",
                (tid,),
            )

    await db.write(insert)
    return runs


async def thread_ids(db: Database) -> list[str]:
    return [r[0] for r in await db.fetchall("SELECT thread_id FROM threads ORDER BY thread_id")]


# Transient errors are retried where a retry cannot apply anything twice.


async def test_locked_at_begin_is_retried_and_the_transaction_applies_once(
    store: SqliteStore,
) -> None:
    faults = ScriptedFaults([Rule("BEGIN IMMEDIATE", "locked", times=3)])
    with inject(store.db, faults):
        assert await insert_thread(store.db, "t1") == 1
    assert faults.rules[0].fired == 3
    assert faults.statements.count("BEGIN IMMEDIATE") == 4
    assert await thread_ids(store.db) == ["t1"]


async def test_locked_at_a_statement_is_retried_inside_the_still_open_transaction(
    store: SqliteStore,
) -> None:
    faults = ScriptedFaults([Rule(INSERT, "locked", times=2)])
    with inject(store.db, faults):
        assert await insert_thread(store.db, "t1", also="t2") == 1
    assert faults.rules[0].fired == 2
    assert faults.statements.count("BEGIN IMMEDIATE") == 1, "the transaction was not restarted"
    assert await thread_ids(store.db) == ["t1", "t2"]


async def test_locked_at_commit_is_retried_and_commits_once(store: SqliteStore) -> None:
    faults = ScriptedFaults([Rule("COMMIT", "locked", times=3)])
    with inject(store.db, faults):
        assert await insert_thread(store.db, "t1", also="t2") == 1
    assert faults.statements.count("COMMIT") == 4
    assert sum(INSERT in s for s in faults.statements) == 2
    assert await thread_ids(store.db) == ["t1", "t2"]


async def test_locked_reads_are_retried(store: SqliteStore) -> None:
    await insert_thread(store.db, "t1")
    faults = ScriptedFaults([Rule("SELECT * FROM threads", "locked", times=3)])
    with inject(store.db, faults):
        thread = await store.threads.get("t1")
    assert thread.thread_id == "t1"
    assert faults.rules[0].fired == 3


async def test_store_operations_get_through_locks_at_every_statement(store: SqliteStore) -> None:
    faults = ScriptedFaults(
        [Rule("BEGIN", "locked", 2), Rule("SELECT", "locked", 2), Rule("COMMIT", "locked", 2)]
    )
    with inject(store.db, faults):
        created = await store.threads.create("t1", {"a": 1})
        updated = await store.threads.update_metadata("t1", {"b": 2})
    assert [rule.fired for rule in faults.rules] == [2, 2, 2]
    assert created.thread_id == "t1"
    assert updated.metadata == {"a": 1, "b": 2}
    assert (await store.threads.get("t1")).metadata == {"a": 1, "b": 2}


async def test_a_real_lock_held_by_another_connection_is_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "contended.db"
    db = await Database.open(path, policy=RetryPolicy(first_wait=0.005, busy_timeout_ms=20))
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    happened: list[str] = []

    class ReleaseAtTheRetry:
        """Injects nothing; lets the other connection go only once the writer tries again."""

        def decide(self, sql: str, parameters: Any) -> None:
            if sql == "BEGIN IMMEDIATE":
                happened.append("begin")
                if happened.count("begin") == 2:  # the first met SQLite's own SQLITE_BUSY
                    other.rollback()
                    happened.append("released")
            return None

    try:
        other.execute("BEGIN IMMEDIATE")
        with inject(db, ReleaseAtTheRetry()):
            assert await insert_thread(db, "t1") == 1
        happened.append("written")
        assert happened == ["begin", "begin", "released", "written"]
        assert await thread_ids(db) == ["t1"]
    finally:
        other.close()
        await db.close()


# Errors that outlast the retries, and I/O errors, become StoreUnavailable.


async def test_a_lock_that_outlasts_the_retries_is_store_unavailable_and_applies_nothing(
    store: SqliteStore,
) -> None:
    faults = ScriptedFaults([Rule(INSERT, "locked", times=100)])
    with inject(store.db, faults), pytest.raises(StoreUnavailable) as caught:
        await insert_thread(store.db, "t1")
    assert faults.rules[0].fired == FAST.attempts, "bounded: exactly `attempts` tries"
    assert caught.value.reason == "STORE_UNAVAILABLE"
    assert caught.value.metadata == {"sqlite_error": "SQLITE_BUSY"}
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert await thread_ids(store.db) == []
    assert await insert_thread(store.db, "t2") == 1, "the store works afterwards"


async def test_a_real_lock_never_released_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    db = await Database.open(path, policy=FAST)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable) as caught:
            await insert_thread(db, "t1")
        assert caught.value.metadata == {"sqlite_error": "SQLITE_BUSY"}
        assert getattr(caught.value.__cause__, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
        other.rollback()
        assert await insert_thread(db, "t1") == 1
    finally:
        other.close()
        await db.close()


async def test_a_lock_that_cost_the_transaction_is_not_retried_and_nothing_applies(
    store: SqliteStore,
) -> None:
    # SQLite may roll the whole transaction back on SQLITE_BUSY: retrying the statement would
    # then run the rest of the block outside any transaction.
    faults = ScriptedFaults([Rule("VALUES ('t2'", "lost")])

    def three_inserts(conn: Session) -> None:
        for tid in ("t1", "t2", "t3"):
            conn.execute(
                "INSERT INTO threads (thread_id, status, create_time, update_time)"
                f" VALUES ('{tid}', 'idle', 0, 0)"
            )

    with inject(store.db, faults), pytest.raises(StoreUnavailable):
        await store.db.write(three_inserts)
    inserts = [s for s in faults.statements if INSERT in s]
    assert len(inserts) == 2, "no retry, and no statement after it"
    assert await thread_ids(store.db) == [], "the first insert went with its transaction"
    assert await insert_thread(store.db, "t4") == 1


@pytest.mark.parametrize("where", ["BEGIN IMMEDIATE", INSERT, "COMMIT"])
async def test_an_io_error_in_a_transaction_is_not_retried_and_is_store_unavailable(
    store: SqliteStore, where: str
) -> None:
    faults = ScriptedFaults([Rule(where, "io", times=100)])
    with inject(store.db, faults), pytest.raises(StoreUnavailable) as caught:
        await insert_thread(store.db, "t1", also="t2")
    assert faults.rules[0].fired == 1, "an I/O error is not retried"
    assert caught.value.metadata == {"sqlite_error": "SQLITE_IOERR"}
    assert await thread_ids(store.db) == []
    assert await insert_thread(store.db, "t3") == 1, "the store works once the disk does"


async def test_an_io_error_on_a_read_is_not_retried_and_is_store_unavailable(
    store: SqliteStore,
) -> None:
    await insert_thread(store.db, "t1")
    faults = ScriptedFaults([Rule("SELECT", "io", times=100)])
    with inject(store.db, faults), pytest.raises(StoreUnavailable) as caught:
        await store.threads.get("t1")
    assert faults.rules[0].fired == 1
    assert "disk I/O error" in caught.value.message


async def test_cancelling_a_write_while_its_commit_retries_still_applies_it_once(
    tmp_path: Path,
) -> None:
    slow = RetryPolicy(first_wait=0.05, max_wait=0.05)  # a wide window to cancel in
    db = await Database.open(tmp_path / "cancel.db", policy=slow)
    faults = ScriptedFaults([Rule("COMMIT", "locked", times=3)])
    try:
        with inject(db, faults):
            writing = asyncio.create_task(insert_thread(db, "t1"))

            async def commit_failed() -> None:
                assert faults.rules[0].fired > 0

            await eventually(commit_failed, interval=0.001)
            writing.cancel()
            fired_at_cancel = faults.rules[0].fired
            with pytest.raises(asyncio.CancelledError):
                await writing
            assert fired_at_cancel < 3
            # The next write queues behind the group being committed, which runs to its end.
            assert await insert_thread(db, "t2") == 1
            assert faults.rules[0].fired == 3
        assert await thread_ids(db) == ["t1", "t2"]
    finally:
        await db.close()


async def test_writes_queued_in_one_pass_of_the_loop_share_one_group(store: SqliteStore) -> None:
    began = threading.Event()
    sessions: list[Session] = []

    def body(conn: Session) -> None:
        began.set()
        sessions.append(conn)  # one session per group

    first = store.db.submit(body)
    # Were the writer's thread woken at the first write, it would take that write alone: given
    # the chance here (the loop blocked, the GIL free), it would begin it within this wait.
    began.wait(0.5)
    rest = [store.db.submit(body) for _ in range(3)]
    await asyncio.gather(first, *rest)
    assert len(sessions) == 4
    assert all(session is sessions[0] for session in sessions), "one group, one transaction"


async def test_a_write_cancelled_before_its_group_begins_is_withdrawn(store: SqliteStore) -> None:
    held = asyncio.Event()
    release = threading.Event()

    def hold(conn: Session) -> None:
        held.set()  # only a flag: set from the writer's thread, read after release
        release.wait(5)

    holding = asyncio.create_task(store.db.write(hold))
    await eventually(lambda: _is_set(held), interval=0.001)
    queued = asyncio.create_task(insert_thread(store.db, "t1"))
    await asyncio.sleep(0)
    queued.cancel()
    release.set()
    # Blocks the loop (not yielding): the writer's thread takes its next group before the
    # cancelled caller runs again, so the withdrawal must not wait for the caller.
    time.sleep(0.05)  # noqa: ASYNC251 (blocking the loop is the point)
    await holding
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert await insert_thread(store.db, "t2") == 1
    assert await thread_ids(store.db) == ["t2"]


async def _is_set(event: asyncio.Event) -> None:
    assert event.is_set()


async def test_a_failing_write_is_undone_alone_and_its_group_commits(store: SqliteStore) -> None:
    release = threading.Event()
    holding = asyncio.create_task(store.db.write(lambda conn: release.wait(5)))
    await asyncio.sleep(0.01)
    group = [
        asyncio.create_task(insert_thread(store.db, "t1")),
        asyncio.create_task(insert_thread(store.db, "t2", also="t1")),  # t1 exists: undone
        asyncio.create_task(insert_thread(store.db, "t3")),
    ]
    await asyncio.sleep(0.01)
    release.set()
    await holding
    results = await asyncio.gather(*group, return_exceptions=True)
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await thread_ids(store.db) == ["t1", "t3"], "t2's own insert was undone"
    # t2 failed after writing, so the group was rolled back and applied again without it:
    # t1's write ran twice (applied once), t3's once (it came after t2).
    assert results[0] == 2 and results[2] == 1


async def test_a_write_failing_before_it_writes_costs_its_group_nothing(store: SqliteStore) -> None:
    await insert_thread(store.db, "t0")
    release = threading.Event()
    holding = asyncio.create_task(store.db.write(lambda conn: release.wait(5)))
    await asyncio.sleep(0.01)

    def refuse(conn: Session) -> None:
        conn.execute("SELECT 1")
        raise ValueError("refused before writing")

    group = [
        asyncio.create_task(insert_thread(store.db, "t1")),
        asyncio.create_task(store.db.write(refuse)),
        asyncio.create_task(insert_thread(store.db, "t2")),
    ]
    await asyncio.sleep(0.01)
    release.set()
    await holding
    results = await asyncio.gather(*group, return_exceptions=True)
    assert isinstance(results[1], ValueError)
    assert results[0] == 1 and results[2] == 1, "nothing to undo: the group ran once"
    assert await thread_ids(store.db) == ["t0", "t1", "t2"]


# Everything else is not the store being unavailable, and keeps its meaning.


async def test_constraint_and_sql_errors_are_neither_retried_nor_translated(
    store: SqliteStore,
) -> None:
    await insert_thread(store.db, "t1")
    with pytest.raises(sqlite3.IntegrityError):
        await insert_thread(store.db, "t1")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await store.db.fetchall("SELECT * FROM nowhere")
    with pytest.raises(sqlite3.OperationalError, match="syntax error"):
        await store.db.write(lambda conn: conn.execute("INSERTT INTO threads"))
    assert await thread_ids(store.db) == ["t1"]


@pytest.mark.parametrize(
    ("error", "name"),
    [
        (sqlite3.OperationalError("database is locked"), "SQLITE_BUSY"),
        (sqlite3.OperationalError("database table is locked"), "SQLITE_LOCKED"),
        (sqlite3.OperationalError("database is busy"), "SQLITE_BUSY"),
        (sqlite3.OperationalError("disk I/O error"), "SQLITE_IOERR"),
        (sqlite3.OperationalError("database or disk is full"), "SQLITE_FULL"),
        (sqlite3.OperationalError("unable to open database file"), "SQLITE_CANTOPEN"),
        (sqlite3.DatabaseError("database disk image is malformed"), "SQLITE_CORRUPT"),
        (sqlite3.DatabaseError("file is not a database"), "SQLITE_NOTADB"),
        (sqlite3.DatabaseError("something else went wrong"), "DATABASE_ERROR"),
        (sqlite3.OperationalError("no such table: nowhere"), None),
        (sqlite3.IntegrityError("database is locked"), None),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), None),
        (ValueError("database is locked"), None),
    ],
)
def test_sqlite_errors_are_named_by_code_or_else_by_message(
    error: Exception, name: str | None
) -> None:
    assert error_name(error) == name
    assert is_transient(error) == (name in ("SQLITE_BUSY", "SQLITE_LOCKED"))


def test_store_unavailable_is_unavailable_to_grpc() -> None:
    error = StoreUnavailable("the store is unavailable", metadata={"sqlite_error": "SQLITE_IOERR"})
    assert isinstance(error, Unavailable)
    assert (code_of(error), error.reason) == (grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
