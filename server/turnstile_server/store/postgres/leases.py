"""Replicas on one database: leases on the database's clock, claims, epochs, the sweeper.

Each serving process is an *incarnation* with a row in `replicas` whose `expires_at` it
renews every beat (`clock_timestamp()`, the database's clock: no two machines' clocks are
compared). A run it starts is stamped `owner = incarnation, epoch = epoch + 1` in the starting
transaction, and every later write of that attempt presents the epoch (`fence.py`). A lease
that expired is never renewed: the incarnation is over, its runs are the sweeper's.

The sweeper (`sweep`, every replica, every beat) takes the RUNNING runs whose owner's lease
expired, locking their threads `FOR UPDATE SKIP LOCKED` (a thread another transaction holds
is looked at next time): a run being cancelled is finished so, one cut off `max_attempts`
times ends ERROR, any other goes back to PENDING with its epoch bumped, to be claimed as its
next attempt (its input was written by its first attempt: applied once).

An incarnation records the graph ids it serves (`replicas.graphs`): it claims and starts only
runs of those, and admission elsewhere of a graph it alone serves is told to retry here
(`serving`). A thread deleted while its run executes leaves that attempt in
`unwinding_attempts` until its owner has stopped it (`unwound`) or the owner's lease expired
(the sweeper): what a DeleteThread on another replica waits for (`unwinding`).

Signals between replicas are NOTIFYs sent in the transaction that makes them true (a rolled
back one is never delivered): `turnstile_cancel` (a running run was marked cancelled, or its
thread deleted) and `turnstile_ready` (a run waits to be claimed). Both are hints: the
heartbeat reports the cancellations of the runs a replica executes, and a poll every beat
claims what a lost `ready` left waiting.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import asyncpg

from turnstile_server.errors import Unavailable
from turnstile_server.ids import new_id
from turnstile_server.store.interface import Renewal
from turnstile_server.store.postgres.database import CONNECT_TIMEOUT, Conn, Database
from turnstile_server.store.postgres.listener import (
    CANCEL_CHANNEL,
    ENDED_CHANNEL,
    READY_CHANNEL,
    Listener,
)
from turnstile_server.store.postgres.rows import SELECT_RUNS, run_from_row
from turnstile_server.store.records import Admission, Ended, Recovery, RunError, RunRecord, Start

log = logging.getLogger(__name__)

_CLAIM_THREAD = """
    SELECT t.thread_id FROM threads t
    CROSS JOIN LATERAL (
        SELECT p.status, p.not_before, p.seq, p.graph_id FROM runs p
        WHERE p.thread_id = t.thread_id AND p.status IN ('pending', 'running')
        ORDER BY p.seq LIMIT 1
    ) head
    WHERE t.status = 'busy' AND head.status = 'pending' AND head.not_before <= $2
        AND NOT (t.thread_id = ANY($1::text[])) AND head.graph_id = ANY($3::text[])
    ORDER BY head.seq LIMIT 1
    FOR UPDATE OF t SKIP LOCKED
"""
"""A thread whose first inflight run is a due pending one of a graph this replica serves,
that no transaction holds."""

_ORPHANED = (
    " LEFT JOIN replicas l ON l.incarnation = r.owner"
    " WHERE r.status = 'running' AND (l.incarnation IS NULL OR l.expires_at <= clock_timestamp())"
)


async def notify_cancel(conn: Conn, runs: list[RunRecord]) -> None:
    """Tells the replicas, once the transaction commits, that these running runs must stop."""
    for run in runs:
        payload = json.dumps({"thread_id": run.thread_id, "run_id": run.run_id})
        await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, payload)


ENDED_PER_NOTICE = 100
"""Run ids per ended notice (a NOTIFY payload holds at most 8,000 bytes)."""


async def notify_ended(conn: Conn, run_ids: list[str]) -> None:
    """Tells the replicas, once the transaction commits, that these runs ended (or are
    gone): their waiters there (JoinRun, WaitRun, CancelRun with wait) read the run now,
    not at their next poll."""
    for first in range(0, len(run_ids), ENDED_PER_NOTICE):
        payload = ",".join(run_ids[first : first + ENDED_PER_NOTICE])
        await conn.execute("SELECT pg_notify($1, $2)", ENDED_CHANNEL, payload)


async def deleting_running(conn: Conn, thread_id: str) -> None:
    """Records the attempts executing the runs of a thread being deleted in this
    transaction, as unwinding until their replicas have stopped them (`unwound`)."""
    await conn.execute(
        "INSERT INTO unwinding_attempts (run_id, epoch, owner)"
        " SELECT run_id, epoch, owner FROM runs"
        " WHERE thread_id = $1 AND status = 'running' AND owner IS NOT NULL"
        " ON CONFLICT DO NOTHING",
        thread_id,
    )


async def unwound(conn: Conn, run: RunRecord) -> None:
    """This replica's attempt of `run`, deleted while it executed, has stopped: whoever
    waits for it (`unwinding`) is told, once the transaction commits."""
    gone = await conn.fetchval(
        "DELETE FROM unwinding_attempts WHERE run_id = $1 AND epoch = $2 RETURNING run_id",
        run.run_id,
        run.epoch,
    )
    if gone is not None:
        await notify_ended(conn, [run.run_id])


async def notify_ready(conn: Conn, thread_id: str) -> None:
    """Tells the replicas, once the transaction commits, that a run waits to be claimed."""
    await conn.execute("SELECT pg_notify($1, $2)", READY_CHANNEL, thread_id)


async def stamp(conn: Conn, start: Start, incarnation: str) -> Start:
    """Makes a run just started in this transaction this incarnation's, at the next epoch,
    and opens its attempt's audit row; Unavailable if the incarnation's lease has expired
    (the whole transaction is undone). Unstamped without an incarnation (a store no serving
    replica opened, as in the store tests)."""
    if start.run is None or not incarnation:
        return start
    epoch = await conn.fetchval(
        "UPDATE runs SET epoch = epoch + 1, owner = $2 WHERE run_id = $1 AND EXISTS ("
        " SELECT 1 FROM replicas WHERE incarnation = $2 AND expires_at > clock_timestamp())"
        " RETURNING epoch",
        start.run.run_id,
        incarnation,
    )
    if epoch is None:
        raise Unavailable("this replica's lease expired; retry, on another replica or later")
    await conn.execute(
        "INSERT INTO run_attempts (thread_id, run_id, epoch, attempt, owner)"
        " VALUES ($1, $2, $3, $4, $5)",
        start.run.thread_id,
        start.run.run_id,
        epoch,
        start.run.attempt,
        incarnation,
    )
    return replace(start, run=replace(start.run, epoch=int(epoch)))


async def attempt_ended(conn: Conn, run: RunRecord, outcome: str) -> None:
    """Closes the audit row of `run`'s attempt."""
    await conn.execute(
        "UPDATE run_attempts SET end_time = clock_timestamp(), outcome = $3"
        " WHERE run_id = $1 AND epoch = $2 AND end_time IS NULL",
        run.run_id,
        run.epoch,
        outcome,
    )


async def admitted(conn: Conn, admission: Admission, incarnation: str) -> Admission:
    """What an admission owes the other replicas, in its transaction: the started run
    stamped, the superseded running runs' owners told, a run left pending announced."""
    if admission.existing:
        return admission
    if admission.cancelling:
        await notify_cancel(conn, admission.cancelling)
    if admission.ended or admission.deleted:
        await notify_ended(conn, [run.run_id for run in [*admission.ended, *admission.deleted]])
    if admission.start is not None and admission.start.run is not None:
        admission.start = await stamp(conn, admission.start, incarnation)
    elif not admission.run.queue_position:
        # Due now with nothing ahead, but not started here (no free slot): any replica may.
        # (A run behind others is announced when the one before it ends.)
        await notify_ready(conn, admission.run.thread_id)
    return admission


async def finished(
    conn: Conn, run: RunRecord, ended: Ended | None, incarnation: str
) -> Ended | None:
    """What a run's end owes, in its transaction: its attempt's audit row closed, the next
    run stamped if it started too, else announced if the thread has one waiting (to the
    replicas that serve its graph, if this one does not)."""
    await attempt_ended(conn, run, ended.run.status if ended is not None else "gone")
    if ended is None:  # gone with its thread (or never there)
        await unwound(conn, run)
        return None
    await notify_ended(conn, [run.run_id])
    if ended.next.run is not None:
        return replace(ended, next=await stamp(conn, ended.next, incarnation))
    busy = await conn.fetchval(
        "SELECT status = 'busy' FROM threads WHERE thread_id = $1", run.thread_id
    )
    if busy:
        await notify_ready(conn, run.thread_id)
    return ended


async def claim(
    conn: Conn, exclude: list[str], now: int, incarnation: str, graphs: list[str]
) -> Start:
    """Starts, as this incarnation's, the first pending run of a ready thread no other
    transaction holds, if it is of one of `graphs` (see `_CLAIM_THREAD`), or nothing."""
    # Imported here: run_writes imports this module's notifications.
    from turnstile_server.store.postgres import run_writes

    thread_id = await conn.fetchval(_CLAIM_THREAD, exclude, now, graphs)
    if thread_id is None:
        return Start()
    start = await run_writes.start_next(conn, thread_id, now, locked=True, graphs=graphs)
    return await stamp(conn, start, incarnation)


async def sweep(conn: Conn, max_attempts: int, now: int) -> Recovery:
    """Settles the RUNNING runs whose owner's lease expired (or that have none), on the
    threads no other transaction holds (see the module's docstring)."""
    from turnstile_server.store.postgres import run_writes

    recovery = Recovery()
    threads = await conn.fetch(
        f"SELECT DISTINCT r.thread_id FROM runs r {_ORPHANED} ORDER BY r.thread_id"
    )
    for (thread_id,) in threads:
        held = await conn.fetchval(
            "SELECT 1 FROM threads WHERE thread_id = $1 FOR UPDATE SKIP LOCKED", thread_id
        )
        if held is None:
            continue
        rows = await conn.fetch(f"{SELECT_RUNS} {_ORPHANED} AND r.thread_id = $1", thread_id)
        for run in [run_from_row(row) for row in rows]:
            run = replace(run, epoch=int(await _epoch(conn, run.run_id)))
            if run.cancel_action == "rollback":
                await attempt_ended(conn, run, "lost")
                await run_writes._delete_run(conn, run.run_id, now)
                recovery.deleted.append(run_writes._ended(run, "interrupted", now, None))
                outcome = "rollback"
            elif run.cancel_action is not None:
                await conn.execute(
                    "UPDATE runs SET status = 'interrupted', end_time = $1 WHERE run_id = $2",
                    now,
                    run.run_id,
                )
                recovery.ended.append(run_writes._ended(run, "interrupted", now, None))
                outcome = "interrupted"
            elif run.attempt >= max_attempts:
                error = RunError(
                    "MaxAttemptsExceeded",
                    f"the run was cut off {run.attempt} times (its replica stopped, crashed or"
                    f" lost its lease during it); giving up after {max_attempts} attempts",
                )
                await conn.execute(
                    "UPDATE runs SET status = 'error', end_time = $1, error_type = $2,"
                    " error_message = $3 WHERE run_id = $4",
                    now,
                    error.type,
                    error.message,
                    run.run_id,
                )
                recovery.ended.append(run_writes._ended(run, "error", now, error))
                outcome = "error"
            else:
                await conn.execute(
                    "UPDATE runs SET status = 'pending', epoch = epoch + 1, owner = NULL"
                    " WHERE run_id = $1",
                    run.run_id,
                )
                recovery.requeued += 1
                recovery.taken.append(replace(run, status="pending", epoch=run.epoch + 1))
                await notify_ready(conn, thread_id)
                await attempt_ended(conn, run, "lost")
                continue
            await attempt_ended(conn, run, "lost")
            await run_writes._settle_thread(conn, thread_id, outcome, now)
    # The deleted runs' attempts that no live replica unwinds any more.
    released = await conn.fetch(
        "DELETE FROM unwinding_attempts u WHERE NOT EXISTS (SELECT 1 FROM replicas l"
        " WHERE l.incarnation = u.owner AND l.expires_at > clock_timestamp()) RETURNING run_id"
    )
    if released:
        await notify_ended(conn, [row["run_id"] for row in released])
    # Incarnations over for an hour, with nothing left of theirs: forgotten.
    await conn.execute(
        "DELETE FROM replicas l WHERE l.expires_at < clock_timestamp() - interval '1 hour'"
        " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.owner = l.incarnation"
        " AND r.status = 'running')"
    )
    settled = [run.run_id for run in [*recovery.ended, *recovery.deleted]]
    if settled:
        await notify_ended(conn, settled)
    return recovery


async def _epoch(conn: Conn, run_id: str) -> int:
    return int(await conn.fetchval("SELECT epoch FROM runs WHERE run_id = $1", run_id))


class PostgresReplicas:
    """This process's incarnation and lease (`ReplicaStore`), on connections of its own: a
    lease connection (so a busy pool never delays a renewal) and a listening one."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._incarnation = ""
        self._name = ""
        self._lease: Any = None
        self._listener = Listener(db)
        self._relay: str | None = None
        self._graphs: list[str] | None = None

    @property
    def incarnation(self) -> str:
        """This incarnation's id ("" before `join`)."""
        return self._incarnation

    @property
    def graphs(self) -> list[str] | None:
        """The graph ids whose runs this replica starts (None before `join`: any)."""
        return self._graphs

    async def join(self, name: str, ttl: float, graphs: list[str]) -> str:
        """Starts a new incarnation with a lease of `ttl` s on the database's clock, serving
        `graphs`."""
        incarnation = new_id()
        self._name = name
        self._graphs = list(graphs)
        await self._execute(
            "INSERT INTO replicas (incarnation, name, expires_at, relay, graphs)"
            " VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3), $4, $5)",
            incarnation,
            name,
            ttl,
            self._relay,  # what an earlier incarnation of this process agreed to
            self._graphs,
        )
        self._incarnation = incarnation
        log.info("replica %s joined as incarnation %s (lease %.1f s)", name, incarnation, ttl)
        return incarnation

    async def agree(self, relay: str, *, alone: bool) -> list[tuple[str, str]]:
        """Under the `deployment` row's lock: the live incarnations that agreed to another
        relay (or, `alone`, any that agreed), as (name, relay); if none, `relay` is recorded
        as the deployment's and this incarnation's."""
        conn = await self._lease_conn()
        try:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO deployment (id, relay) VALUES (1, $1) ON CONFLICT DO NOTHING",
                    relay,
                )
                await conn.execute("SELECT 1 FROM deployment WHERE id = 1 FOR UPDATE")
                rows = await conn.fetch(
                    "SELECT name, relay FROM replicas WHERE expires_at > clock_timestamp()"
                    " AND incarnation <> $1 AND relay IS NOT NULL ORDER BY start_time",
                    self._incarnation,
                )
                others = [(row["name"], row["relay"]) for row in rows]
                blocking = [(name, theirs) for name, theirs in others if alone or theirs != relay]
                if blocking:
                    return blocking
                await conn.execute(
                    "UPDATE deployment SET relay = $1, update_time = clock_timestamp()"
                    " WHERE id = 1 AND relay <> $1",
                    relay,
                )
                await conn.execute(
                    "UPDATE replicas SET relay = $2 WHERE incarnation = $1",
                    self._incarnation,
                    relay,
                )
        except BaseException:
            self._drop_lease_conn()
            raise
        self._relay = relay
        return []

    async def renew(self, ttl: float, running: dict[str, int]) -> Renewal | None:
        """Extends the lease unless it expired; which of `running` to stop (see `Renewal`)."""
        conn = await self._lease_conn()
        try:
            renewed = await conn.fetchval(
                "UPDATE replicas SET expires_at = clock_timestamp() + make_interval(secs => $2),"
                " renew_time = clock_timestamp()"
                " WHERE incarnation = $1 AND expires_at > clock_timestamp() RETURNING 1",
                self._incarnation,
                ttl,
            )
            if renewed is None:
                return None
            renewal = Renewal()
            if not running:
                return renewal
            rows = await conn.fetch(
                "SELECT x.run_id, r.status, r.epoch, r.owner, r.cancel_action"
                " FROM unnest($1::text[], $2::bigint[]) AS x(run_id, epoch)"
                " LEFT JOIN runs r ON r.run_id = x.run_id",
                list(running),
                list(running.values()),
            )
        except BaseException:
            self._drop_lease_conn()
            raise
        for row in rows:
            mine = (
                row["status"] == "running"
                and row["owner"] == self._incarnation
                and row["epoch"] == running[row["run_id"]]
            )
            if not mine:
                renewal.lost.append(row["run_id"])
            elif row["cancel_action"] is not None:
                renewal.cancel.append(row["run_id"])
        return renewal

    async def leave(self) -> None:
        """Ends the lease now, so the other replicas take this incarnation's runs at once."""
        if not self._incarnation:
            return
        try:
            await self._execute(
                "UPDATE replicas SET expires_at = LEAST(expires_at, clock_timestamp())"
                " WHERE incarnation = $1",
                self._incarnation,
            )
        finally:
            self._drop_lease_conn()

    async def claim(self, exclude: list[str]) -> Start:
        """Claims a ready thread's first pending run (see `claim`)."""
        from turnstile_server.store.records import now_us

        now = now_us()
        incarnation, graphs = self._incarnation, self._graphs or []
        return await self._db.write(lambda conn: claim(conn, exclude, now, incarnation, graphs))

    async def serving(self, graph_id: str) -> list[str]:
        """The names of the live replicas that serve `graph_id`."""
        rows = await self._db.read(
            lambda conn: conn.fetch(
                "SELECT DISTINCT name FROM replicas WHERE expires_at > clock_timestamp()"
                " AND $1 = ANY(graphs) ORDER BY name",
                graph_id,
            )
        )
        return [row["name"] for row in rows]

    async def unwinding(self, run_ids: list[str]) -> list[str]:
        """Which of `run_ids`, deleted with their thread while they executed, a live replica
        has not stopped yet."""
        rows = await self._db.read(
            lambda conn: conn.fetch(
                "SELECT u.run_id FROM unwinding_attempts u JOIN replicas l"
                " ON l.incarnation = u.owner AND l.expires_at > clock_timestamp()"
                " WHERE u.run_id = ANY($1::text[])",
                run_ids,
            )
        )
        return [row["run_id"] for row in rows]

    async def unwound(self, run: RunRecord) -> None:
        """This replica stopped `run` without finishing it (see `unwound`)."""
        await self._db.write(lambda conn: unwound(conn, run))

    async def listen(
        self,
        on_cancel: Callable[[str, str], None],
        on_ready: Callable[[], None],
        on_ended: Callable[[str], None],
        on_lost: Callable[[], None],
    ) -> bool:
        """(Re)connects the listening connection if it is not open (see `Listener.listen`)."""
        return await self._listener.listen(self._name, on_cancel, on_ready, on_ended, on_lost)

    async def unlisten(self) -> None:
        """Closes the listening connection."""
        await self._listener.unlisten()

    async def _lease_conn(self) -> Any:
        if self._lease is None or self._lease.is_closed():
            self._lease = await asyncpg.connect(
                self._db.url,
                timeout=CONNECT_TIMEOUT,
                server_settings={"application_name": f"turnstile lease {self._name}"},
            )
        return self._lease

    def _drop_lease_conn(self) -> None:
        conn, self._lease = self._lease, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    async def _execute(self, sql: str, *args: Any) -> None:
        conn = await self._lease_conn()
        try:
            await conn.execute(sql, *args)
        except BaseException:
            self._drop_lease_conn()
            raise
