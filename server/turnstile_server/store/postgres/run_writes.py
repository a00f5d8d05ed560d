"""The run writes: async functions run whole inside one transaction (`Database.write`).

Each begins by locking its thread's row (`lock_thread`: `SELECT ... FOR UPDATE`), so every
change that decides what runs on a thread is serialised on that row, whichever process, or
replica, makes it: two admissions on one thread cannot interleave. The thread is locked
before its runs, in every write, so the writes never deadlock each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from turnstile_server import policy
from turnstile_server.errors import RequestIdRolledBack, RunNotFound, ThreadNotFound
from turnstile_server.store import run_changes as changes
from turnstile_server.store.postgres.checkpoints import insert_checkpoint
from turnstile_server.store.postgres.database import Conn
from turnstile_server.store.postgres.langgraph import delete_langgraph_runs
from turnstile_server.store.postgres.locks import lock_thread
from turnstile_server.store.postgres.rows import SELECT_RUNS, dumps, loads, run_from_row
from turnstile_server.store.records import (
    Admission,
    Ended,
    Recovery,
    RunError,
    RunRecord,
    RunSpec,
    Start,
)
from turnstile_server.store.row_records import RUN_INSERT_COLUMNS, admitted_run, admitted_values


async def one(conn: Conn, where: str, *params: Any) -> RunRecord | None:
    """The first run matching `where` (SQL over `runs r`), or None."""
    row = await conn.fetchrow(f"{SELECT_RUNS} WHERE {where}", *params)
    return run_from_row(row) if row else None


async def inflight_runs(conn: Conn, thread_id: str) -> list[RunRecord]:
    """The thread's PENDING and RUNNING runs, in admission order."""
    rows = await conn.fetch(
        f"{SELECT_RUNS} WHERE r.thread_id = $1 AND r.status IN ('pending', 'running')"
        " ORDER BY r.seq",
        thread_id,
    )
    return [run_from_row(row) for row in rows]


_INSERT_RUN = (
    f"INSERT INTO runs ({RUN_INSERT_COLUMNS}) VALUES"
    f" ({', '.join(f'${n}' for n in range(1, RUN_INSERT_COLUMNS.count(',') + 2))}) RETURNING seq"
)


async def admit(
    conn: Conn, spec: RunSpec, run_id: str, now: int, max_queued: int, start: bool
) -> Admission:
    """Admits a run with its strategy: lock the thread, check, insert, supersede."""
    thread = await conn.fetchrow(
        "SELECT status, interrupts FROM threads WHERE thread_id = $1 FOR UPDATE", spec.thread_id
    )
    status = None if thread is None else thread["status"]
    if status is None:
        if not spec.create_thread:
            raise ThreadNotFound(spec.thread_id)
        # A concurrent creator may win the insert: then this waits for its commit and locks
        # the row it made (a unique violation in between is retried whole by `Database`).
        await conn.execute(
            "INSERT INTO threads (thread_id, metadata, status, create_time, update_time)"
            " VALUES ($1, '{}', 'idle', $2, $2)",
            spec.thread_id,
            now,
        )
        status = await lock_thread(conn, spec.thread_id)
        assert status is not None
    # Under the thread's lock: a request id admitted concurrently on this thread is seen now
    # (on another thread, its insert below violates the unique key, and the retry sees it).
    if spec.request_id:
        existing = await one(conn, "r.request_id = $1", spec.request_id)
        if existing is not None:
            policy.same_request(spec, existing)
            return Admission(run=existing, existing=True)
        rolled_back = await conn.fetchrow(
            "SELECT thread_id, run_id FROM rolled_back_requests WHERE request_id = $1",
            spec.request_id,
        )
        if rolled_back is not None:
            raise RequestIdRolledBack(spec.request_id, rolled_back[0], rolled_back[1])
    # On a thread that was idle, what the run does to the interrupts its checkpoint waits on
    # (a busy thread's are decided when the run starts, by then the last run's end).
    discarded: tuple[str, ...] = ()
    if thread is not None and status != "busy":
        discarded = policy.plan_pending(spec, loads(thread["interrupts"]))
    # A thread is BUSY exactly while it has inflight runs: one that is not has none to read.
    inflight = await _inflight_marks(conn, spec.thread_id) if status == "busy" else []
    plan = policy.plan_admission(spec, run_id, inflight, max_queued=max_queued)
    superseded = (
        await _supersede(conn, spec.thread_id, plan.supersede, now) if plan.supersede else None
    )
    starting = start and plan.starts_now
    run_input = None if spec.input is None else dumps(spec.input)
    seq = await conn.fetchval(
        _INSERT_RUN, *admitted_values(spec, run_id, now, run_input, starting, discarded)
    )
    await _set_thread_status(conn, spec.thread_id, "busy", now)
    run = admitted_run(spec, run_id, now, run_input, seq, plan.ahead, discarded)
    admission = superseded or Admission(run=run)
    admission.run = run
    if starting:  # inserted RUNNING above: its first attempt has begun
        admission.start = await _begun(conn, run, now, written=0)
    return admission


async def recover(conn: Conn, max_attempts: int, now: int) -> Recovery:
    """Settles the runs left RUNNING (see `Runs.recover`), locking their threads in order."""
    recovery = Recovery()
    threads = await conn.fetch(
        "SELECT DISTINCT thread_id FROM runs WHERE status = 'running' ORDER BY thread_id"
    )
    for thread in threads:
        await lock_thread(conn, thread[0])
    rows = await conn.fetch(f"{SELECT_RUNS} WHERE r.status = 'running' ORDER BY r.seq")
    for run in [run_from_row(row) for row in rows]:
        settled = changes.recovered(run, max_attempts)
        outcome = settled.outcome
        changes.note_recovered(recovery, run, settled, now)
        if outcome == "rollback":
            await _delete_run(conn, run.run_id, now)
        elif outcome == "requeue":
            await conn.execute("UPDATE runs SET status = 'pending' WHERE run_id = $1", run.run_id)
            continue
        else:  # interrupted, or error with its error
            await conn.execute(
                "UPDATE runs SET status = $1, end_time = $2, error_type = $3, error_message = $4"
                " WHERE run_id = $5",
                *changes.ended_columns(settled, now),
                run.run_id,
            )
        keep = outcome != "rollback" and policy.leaves_waiting(
            outcome, run, await _wrote(conn, run.run_id)
        )
        await _settle_thread(
            conn, run.thread_id, outcome, now, interrupts=changes.KEEP if keep else None
        )
    return recovery


async def _wrote(conn: Conn, run_id: str) -> bool:
    """Whether the run wrote any of LangGraph's checkpoints or pending writes."""
    found = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM lg_checkpoints WHERE run_id = $1)"
        " OR EXISTS (SELECT 1 FROM lg_writes WHERE run_id = $1)",
        run_id,
    )
    return bool(found)


async def start_next(
    conn: Conn,
    thread_id: str,
    now: int,
    *,
    locked: bool = False,
    graphs: Sequence[str] | None = None,
) -> Start:
    """Starts the thread's earliest pending run if it is due (see `Runs.start_next`) and,
    with `graphs`, of one of them (the graphs the starting replica serves)."""
    if not locked and await lock_thread(conn, thread_id) is None:
        return Start()
    head = await one(
        conn,
        "r.thread_id = $1 AND r.status IN ('pending', 'running') ORDER BY r.seq LIMIT 1",
        thread_id,
    )
    if head is None or head.status != "pending" or head.cancel_action is not None:
        return Start()
    if graphs is not None and head.graph_id not in graphs:
        return Start()  # a replica serving its graph claims it
    if head.not_before > now:
        return Start(delay=(head.not_before - now) / 1_000_000)
    await conn.execute(
        "UPDATE runs SET status = 'running', attempt = attempt + 1, start_time = $1"
        " WHERE run_id = $2",
        now,
        head.run_id,
    )
    if head.attempt == 0:  # never started: a run writes checkpoints only while it runs
        return await _begun(conn, head, now, written=0)
    written = await conn.fetchval("SELECT COUNT(*) FROM checkpoints WHERE run_id = $1", head.run_id)
    return await _begun(conn, head, now, written=int(written or 0))


async def _begun(conn: Conn, run: RunRecord, now: int, written: int) -> Start:
    """The start of `run`'s next attempt, just recorded RUNNING; on its first attempt its
    input becomes the thread's next checkpoint (applied once however often it resumes)."""
    started = changes.started(run, now)
    if run.attempt == 0 and not run.discarded_interrupts and policy.is_new_input(run):
        started = await _discarding(conn, started)
    if written > 0:
        return Start(run=started, checkpoints=written)
    update = dict(run.input or {})
    checkpoint = await insert_checkpoint(
        conn, run.thread_id, run.run_id, 0, "input", update, now, locked=True
    )
    return Start(run=started, checkpoints=1, input=checkpoint)


async def _discarding(conn: Conn, run: RunRecord) -> RunRecord:
    """`run`, starting over with new input, with the interrupts its thread's latest checkpoint
    waited on (left by the run before it) recorded as discarded."""
    text = await conn.fetchval("SELECT interrupts FROM threads WHERE thread_id = $1", run.thread_id)
    pending = loads(text)
    if not pending:
        return run
    discarded = tuple(policy.pending_ids(pending))
    await conn.execute(
        "UPDATE runs SET discarded_interrupts = $1 WHERE run_id = $2",
        dumps(list(discarded)),
        run.run_id,
    )
    return replace(run, discarded_interrupts=discarded)


_END_RUN = (
    "UPDATE runs SET"
    " status = CASE WHEN cancel_action = 'interrupt' THEN 'interrupted' ELSE $1 END,"
    " end_time = $2,"
    " error_type = CASE WHEN cancel_action = 'interrupt' THEN NULL ELSE $3 END,"
    " error_message = CASE WHEN cancel_action = 'interrupt' THEN NULL ELSE $4 END"
    " WHERE run_id = $5 AND cancel_action IS DISTINCT FROM 'rollback'"
    " RETURNING status, cancel_action, cancel_reason, superseded_by"
)
"""Ends a run not being rolled back: as it ended by itself, or INTERRUPTED if it was being
interrupted; returns what of its row may have changed while it ran."""


async def finish(
    conn: Conn,
    run: RunRecord,
    status: str,
    error: RunError | None,
    now: int,
    then_start: bool,
    interrupts: list[dict[str, Any]] | None = None,
    graphs: Sequence[str] | None = None,
) -> Ended | None:
    """Ends a running run, or deletes it if it is being rolled back (see `Runs.finish`);
    `then_start` starts the thread's next run if it is of one of `graphs` (if given)."""
    if await lock_thread(conn, run.thread_id) is None:
        return None  # gone with its thread
    ended = await conn.fetchrow(
        _END_RUN,
        status,
        now,
        error.type if error else None,
        error.message if error else None,
        run.run_id,
    )
    if ended is not None:
        outcome, action, reason, superseded_by = ended
        status = outcome
        if action == "interrupt":
            error = None
    else:  # being rolled back, or gone with its thread
        marks = await conn.fetchrow(
            "SELECT cancel_action, cancel_reason, superseded_by FROM runs WHERE run_id = $1",
            run.run_id,
        )
        if marks is None:
            return None
        action, reason, superseded_by = marks
        await _delete_run(conn, run.run_id, now)
        outcome, status, error = "rollback", "interrupted", None
    final = changes.finished(run, status, now, error, (action, reason, superseded_by))
    if outcome == "success" and interrupts is not None:
        outcome = "awaiting_input"
    elif policy.leaves_waiting(outcome, run, await _wrote(conn, run.run_id)):
        interrupts = changes.KEEP
    busy = await _settle_thread(conn, run.thread_id, outcome, now, interrupts=interrupts)
    result = Ended(final, outcome == "rollback")
    if then_start and busy:
        return replace(
            result, next=await start_next(conn, run.thread_id, now, locked=True, graphs=graphs)
        )
    return result


async def cancel(
    conn: Conn, thread_id: str, run_id: str, action: str, reason: str | None, now: int
) -> tuple[RunRecord, bool]:
    """Cancels a pending or running run (see `Runs.cancel`)."""
    await lock_thread(conn, thread_id)
    run = await one(conn, "r.run_id = $1 AND r.thread_id = $2", run_id, thread_id)
    if run is None:
        raise RunNotFound(run_id)
    plan = policy.plan_cancel(changes.marks(run), action, reason)
    if not plan.ends_now:  # running: stopped by the scheduler, finished once it has unwound
        if not plan.mark:
            return run, True
        await conn.execute(
            "UPDATE runs SET cancel_action = $1, cancel_reason = $2 WHERE run_id = $3",
            plan.action,
            plan.reason,
            run_id,
        )
        return replace(run, cancel_action=plan.action, cancel_reason=plan.reason), True
    final = await _end_pending(conn, run, plan.action, plan.reason, "", now)
    outcome = "rollback" if plan.action == "rollback" else "interrupted"
    await _settle_thread(conn, thread_id, outcome, now)
    return final, False


async def _supersede(
    conn: Conn, thread_id: str, steps: tuple[policy.Supersede, ...], now: int
) -> Admission:
    """Carries out what a plan does to the thread's inflight runs: an admission still
    without its run (the first of them stands in)."""
    runs = {run.run_id: run for run in await inflight_runs(conn, thread_id)}
    admission = Admission(run=runs[steps[0].run_id])
    for step in steps:
        run = runs[step.run_id]
        if step.ends_now:
            final = await _end_pending(conn, run, step.action, step.reason, step.superseded_by, now)
            changes.record_ended(admission, step, final)
            continue
        # A running run stops at its next await; the scheduler finishes it once it has unwound.
        await conn.execute(
            "UPDATE runs SET cancel_action = $1, cancel_reason = $2, superseded_by = $3"
            " WHERE run_id = $4",
            step.action,
            step.reason,
            step.superseded_by,
            run.run_id,
        )
        admission.cancelling.append(changes.cancelling(run, step))
    return admission


async def _inflight_marks(conn: Conn, thread_id: str) -> list[policy.InflightRun]:
    """The thread's inflight runs as the policy sees them, in admission order (no JSON read)."""
    rows = await conn.fetch(
        "SELECT run_id, status, cancel_action FROM runs"
        " WHERE thread_id = $1 AND status IN ('pending', 'running') ORDER BY seq",
        thread_id,
    )
    return [policy.InflightRun(row[0], row[1], row[2]) for row in rows]


async def _end_pending(
    conn: Conn, run: RunRecord, action: str, reason: str, by: str, now: int
) -> RunRecord:
    """Ends a pending run without starting it: INTERRUPTED, or deleted for a rollback."""
    if action == "rollback":
        await _delete_run(conn, run.run_id, now)
    else:
        await conn.execute(
            "UPDATE runs SET status = 'interrupted', end_time = $1, cancel_reason = $2,"
            " superseded_by = $3 WHERE run_id = $4",
            now,
            reason,
            by,
            run.run_id,
        )
    return changes.ended_pending(run, action, reason, by, now)


async def _delete_run(conn: Conn, run_id: str, now: int) -> None:
    """Deletes a run with its checkpoints, LangGraph's included (it is being rolled back), in
    the same transaction, remembering its request id and the run as it was (`rolled_back`)
    for `changes.ROLLED_BACK_REQUESTS_US` (those older are forgotten now)."""
    await conn.execute(
        "DELETE FROM rolled_back_requests WHERE rolled_back_time < $1",
        now - changes.ROLLED_BACK_REQUESTS_US,
    )
    await conn.execute(
        "DELETE FROM rolled_back_runs WHERE rolled_back_time < $1",
        now - changes.ROLLED_BACK_REQUESTS_US,
    )
    await conn.execute(
        "INSERT INTO rolled_back_runs SELECT r.run_id, r.thread_id, row_to_json(r)::text, $1"
        " FROM runs r WHERE r.run_id = $2 ON CONFLICT (run_id) DO NOTHING",
        now,
        run_id,
    )
    await conn.execute(
        "INSERT INTO rolled_back_requests"
        " SELECT request_id, thread_id, run_id, $1 FROM runs"
        " WHERE run_id = $2 AND request_id IS NOT NULL"
        " ON CONFLICT (request_id) DO UPDATE SET thread_id = EXCLUDED.thread_id,"
        " run_id = EXCLUDED.run_id, rolled_back_time = EXCLUDED.rolled_back_time",
        now,
        run_id,
    )
    await conn.execute("DELETE FROM checkpoints WHERE run_id = $1", run_id)
    await delete_langgraph_runs(conn, [run_id])
    await conn.execute("DELETE FROM runs WHERE run_id = $1", run_id)


async def _settle_thread(
    conn: Conn, thread_id: str, outcome: str, now: int, *, interrupts: Any = changes.KEEP
) -> bool:
    """Sets the thread's status after a run ended: BUSY while others are inflight (then
    returns True).

    A started run's end also records what the thread's latest checkpoint waits for:
    `interrupts` when it stopped waiting for input (`awaiting_input`), nothing otherwise. A
    rollback, a run that never started and one that stopped before it wrote anything
    (`policy.leaves_waiting`) leave it (the thread's state is what it was), so a thread that
    waited for input waits again (as on SQLite).
    """
    keep = interrupts is changes.KEEP or outcome == "rollback"
    settled = await conn.fetchval(
        "UPDATE threads SET status = CASE WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = $1"
        " AND status IN ('pending', 'running')) THEN 'busy'"
        " WHEN $4::boolean AND interrupts IS NOT NULL THEN 'interrupted'"
        " ELSE $2::text END,"
        " interrupts = CASE WHEN $4::boolean THEN interrupts ELSE $5::text END,"
        " update_time = $3 WHERE thread_id = $1 RETURNING status",
        thread_id,
        policy.THREAD_STATUS_AFTER[outcome],
        now,
        keep,
        None if keep or interrupts is None else dumps(interrupts),
    )
    return bool(settled == "busy")


async def _set_thread_status(conn: Conn, thread_id: str, status: str, now: int) -> None:
    await conn.execute(
        "UPDATE threads SET status = $1, update_time = $2 WHERE thread_id = $3",
        status,
        now,
        thread_id,
    )


async def rolled_back(conn: Conn, thread_id: str, run_id: str) -> RunRecord | None:
    """The thread's run `run_id` as it was when rolled back (see `_delete_run`), ended
    INTERRUPTED then, as its rollback answered it; None if it was not (or is forgotten)."""
    row = await conn.fetchrow(
        "SELECT run_row, rolled_back_time FROM rolled_back_runs"
        " WHERE run_id = $1 AND thread_id = $2",
        run_id,
        thread_id,
    )
    if row is None:
        return None
    run = run_from_row({**loads(row["run_row"]), "queue_position": None})
    return replace(run, status="interrupted", end_time=row["rolled_back_time"], error=None)


_ended = changes.ended  # for `leases.py`
