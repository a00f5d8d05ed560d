"""The run writes: plain functions run whole inside one write transaction (`Database.write`).

Every change that decides what runs on a thread is one of these, so two admissions on one
thread cannot interleave. `store.runs.Runs` submits them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from turnstile_server import policy
from turnstile_server.errors import RequestIdRolledBack, RunNotFound, ThreadNotFound
from turnstile_server.store import run_changes as changes
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
from turnstile_server.store.sqlite.checkpoints import insert_checkpoint
from turnstile_server.store.sqlite.database import Session
from turnstile_server.store.sqlite.langgraph import delete_langgraph_runs
from turnstile_server.store.sqlite.rows import RUN_COLUMNS, dumps, loads, run_from_row

SELECT_RUNS = f"SELECT {RUN_COLUMNS} FROM runs r"


def one(conn: Session, where: str, *params: Any) -> RunRecord | None:
    """The first run matching `where` (SQL over `runs r`), or None."""
    row = conn.one(f"{SELECT_RUNS} WHERE {where}", params)
    return run_from_row(row) if row else None


def inflight_runs(conn: Session, thread_id: str) -> list[RunRecord]:
    """The thread's PENDING and RUNNING runs, in admission order."""
    rows = conn.all(
        f"{SELECT_RUNS} WHERE r.thread_id = ? AND r.status IN ('pending', 'running')"
        " ORDER BY r.seq",
        (thread_id,),
    )
    return [run_from_row(row) for row in rows]


_INSERT_RUN = (
    f"INSERT INTO runs ({RUN_INSERT_COLUMNS})"
    f" VALUES ({', '.join('?' * (RUN_INSERT_COLUMNS.count(',') + 1))})"  # one a column
)


def admit(
    conn: Session, spec: RunSpec, run_id: str, now: int, max_queued: int, start: bool
) -> Admission:
    """Admits a run with its strategy (see `Runs.admit`)."""
    if spec.request_id:
        existing = one(conn, "r.request_id = ?", spec.request_id)
        if existing is not None:
            policy.same_request(spec, existing)
            return Admission(run=existing, existing=True)
        rolled_back = conn.one(
            "SELECT thread_id, run_id FROM rolled_back_requests WHERE request_id = ?",
            (spec.request_id,),
        )
        if rolled_back is not None:
            raise RequestIdRolledBack(spec.request_id, rolled_back[0], rolled_back[1])
    # A thread is BUSY exactly while it has inflight runs (each write that changes its runs
    # settles its status in the same transaction), so a thread that is not has none to read:
    # it is claimed BUSY for this run at once, and the run goes in with nothing to decide.
    claimed = conn.one(
        "UPDATE threads SET status = 'busy', update_time = ?"
        " WHERE thread_id = ? AND status != 'busy' RETURNING interrupts",
        (now, spec.thread_id),
    )
    # On a thread that was idle, what the run does to the interrupts its checkpoint waits on
    # (a busy thread's are decided when the run starts, by then the last run's end).
    discarded = policy.plan_pending(spec, loads(claimed[0])) if claimed is not None else ()
    busy = False
    if claimed is None:  # BUSY, or no such thread
        thread = conn.one("SELECT status FROM threads WHERE thread_id = ?", (spec.thread_id,))
        if thread is None:
            if not spec.create_thread:
                raise ThreadNotFound(spec.thread_id)
            conn.execute(
                "INSERT INTO threads (thread_id, metadata, status, create_time, update_time)"
                " VALUES (?, '{}', 'busy', ?, ?)",
                (spec.thread_id, now, now),
            )
        busy = thread is not None
    # Not BUSY means no inflight run: there is nothing to read.
    inflight = _inflight_marks(conn, spec.thread_id) if busy else []
    plan = policy.plan_admission(spec, run_id, inflight, max_queued=max_queued)
    superseded = _supersede(conn, spec.thread_id, plan.supersede, now) if plan.supersede else None
    # Started in this write when it is at once the thread's next run and the caller asks.
    starting = start and plan.starts_now
    run_input = None if spec.input is None else dumps(spec.input)
    cursor = conn.execute(
        _INSERT_RUN, admitted_values(spec, run_id, now, run_input, starting, discarded)
    )
    if busy:  # it stays BUSY: only its update time moves
        _set_thread_status(conn, spec.thread_id, "busy", now)
    assert cursor.lastrowid is not None
    run = admitted_run(spec, run_id, now, run_input, cursor.lastrowid, plan.ahead, discarded)
    admission = superseded or Admission(run=run)
    admission.run = run
    if starting:  # inserted RUNNING above: its first attempt has begun
        # On a thread claimed (or created) above, `discarded` says already what the run's
        # input discards of what the thread waited on; on a busy one it is read now.
        admission.start = _begun(conn, run, now, written=0, pending_read=not busy)
    return admission


def recover(conn: Session, max_attempts: int, now: int) -> Recovery:
    """Settles the runs a previous process left RUNNING (see `Runs.recover`)."""
    recovery = Recovery()
    rows = conn.all(f"{SELECT_RUNS} WHERE r.status = 'running' ORDER BY r.seq")
    for run in [run_from_row(row) for row in rows]:
        settled = changes.recovered(run, max_attempts)
        outcome = settled.outcome
        changes.note_recovered(recovery, run, settled, now)
        if outcome == "rollback":
            _delete_run(conn, run.run_id, now)
        elif outcome == "requeue":
            conn.execute("UPDATE runs SET status = 'pending' WHERE run_id = ?", (run.run_id,))
            continue
        else:  # interrupted, or error with its error
            conn.execute(
                "UPDATE runs SET status = ?, end_time = ?, error_type = ?, error_message = ?"
                " WHERE run_id = ?",
                (*changes.ended_columns(settled, now), run.run_id),
            )
        keep = outcome != "rollback" and policy.leaves_waiting(
            outcome, run, _wrote(conn, run.run_id)
        )
        _settle_thread(conn, run.thread_id, outcome, now, interrupts=changes.KEEP if keep else None)
    return recovery


def _wrote(conn: Session, run_id: str) -> bool:
    """Whether the run wrote any of LangGraph's checkpoints or pending writes."""
    return (
        conn.one(
            "SELECT 1 FROM lg_checkpoints WHERE run_id = ?1"
            " UNION ALL SELECT 1 FROM lg_writes WHERE run_id = ?1 LIMIT 1",
            (run_id,),
        )
        is not None
    )


def start_next(conn: Session, thread_id: str, now: int) -> Start:
    """Starts the thread's earliest pending run if it is due (see `Runs.start_next`)."""
    head = one(
        conn,
        "r.thread_id = ? AND r.status IN ('pending', 'running') ORDER BY r.seq LIMIT 1",
        thread_id,
    )
    if head is None or head.status != "pending" or head.cancel_action is not None:
        return Start()
    if head.not_before > now:
        return Start(delay=(head.not_before - now) / 1_000_000)
    conn.execute(
        "UPDATE runs SET status = 'running', attempt = attempt + 1, start_time = ?"
        " WHERE run_id = ?",
        (now, head.run_id),
    )
    if head.attempt == 0:  # never started: a run writes checkpoints only while it runs
        return _begun(conn, head, now, written=0)
    written = conn.one("SELECT COUNT(*) FROM checkpoints WHERE run_id = ?", (head.run_id,))
    return _begun(conn, head, now, written=int(written[0]) if written else 0)


def _begun(
    conn: Session, run: RunRecord, now: int, written: int, *, pending_read: bool = False
) -> Start:
    """The start of `run`'s next attempt, just recorded RUNNING, with `written` checkpoints of
    the run so far. On its first attempt (none) its input becomes the thread's next
    checkpoint, so the input is applied exactly once however often the run resumes.
    `pending_read`: the run's `discarded_interrupts` were decided in this write from the
    thread's pending interrupts (an admission on a thread it claimed), so they are not read
    again."""
    started = changes.started(run, now)
    if (
        not pending_read
        and run.attempt == 0
        and not run.discarded_interrupts
        and policy.is_new_input(run)
    ):
        started = _discarding(conn, started)
    if written > 0:
        return Start(run=started, checkpoints=written)
    update = dict(run.input or {})
    # The run's row was inserted or updated just before, in this write: it is there.
    checkpoint = insert_checkpoint(
        conn, run.thread_id, run.run_id, 0, "input", update, now, run_checked=True
    )
    return Start(run=started, checkpoints=1, input=checkpoint)


def _discarding(conn: Session, run: RunRecord) -> RunRecord:
    """`run`, starting over with new input, with the interrupts its thread's latest checkpoint
    waited on (left by the run before it) recorded as discarded."""
    row = conn.one("SELECT interrupts FROM threads WHERE thread_id = ?", (run.thread_id,))
    pending = loads(row[0]) if row is not None else None
    if not pending:
        return run
    discarded = tuple(policy.pending_ids(pending))
    conn.execute(
        "UPDATE runs SET discarded_interrupts = ? WHERE run_id = ?",
        (dumps(list(discarded)), run.run_id),
    )
    return replace(run, discarded_interrupts=discarded)


_END_RUN = (
    "UPDATE runs SET"
    " status = CASE WHEN cancel_action = 'interrupt' THEN 'interrupted' ELSE ? END,"
    " end_time = ?,"
    " error_type = CASE WHEN cancel_action = 'interrupt' THEN NULL ELSE ? END,"
    " error_message = CASE WHEN cancel_action = 'interrupt' THEN NULL ELSE ? END"
    " WHERE run_id = ? AND cancel_action IS NOT 'rollback'"
    " RETURNING status, cancel_action, cancel_reason, superseded_by"
)
"""Ends a run not being rolled back: as it ended by itself, or INTERRUPTED if it was being
interrupted; returns what of its row may have changed while it ran."""


def finish(
    conn: Session,
    run: RunRecord,
    status: str,
    error: RunError | None,
    now: int,
    then_start: bool,
    interrupts: list[dict[str, Any]] | None = None,
) -> Ended | None:
    """Ends a running run, or deletes it if it is being rolled back (see `Runs.finish`).

    `run` is the run as it started; what may have changed since (a cancellation, the run that
    superseded it) is read back from its row in the same statement that ends it.
    """
    ended = conn.one(
        _END_RUN,
        (
            status,
            now,
            error.type if error else None,
            error.message if error else None,
            run.run_id,
        ),
    )
    if ended is not None:
        outcome, action, reason, superseded_by = ended
        status = outcome
        if action == "interrupt":
            error = None
    else:  # being rolled back, or gone with its thread
        marks = conn.one(
            "SELECT cancel_action, cancel_reason, superseded_by FROM runs WHERE run_id = ?",
            (run.run_id,),
        )
        if marks is None:
            return None
        action, reason, superseded_by = marks
        _delete_run(conn, run.run_id, now)
        outcome, status, error = "rollback", "interrupted", None
    final = changes.finished(run, status, now, error, (action, reason, superseded_by))
    if outcome == "success" and interrupts is not None:
        outcome = "awaiting_input"
    elif policy.leaves_waiting(outcome, run, _wrote(conn, run.run_id)):
        interrupts = changes.KEEP
    busy = _settle_thread(conn, run.thread_id, outcome, now, interrupts=interrupts)
    result = Ended(final, outcome == "rollback")
    if then_start and busy:
        return replace(result, next=start_next(conn, run.thread_id, now))
    return result


def cancel(
    conn: Session, thread_id: str, run_id: str, action: str, reason: str | None, now: int
) -> tuple[RunRecord, bool]:
    """Cancels a pending or running run (see `Runs.cancel`)."""
    run = one(conn, "r.run_id = ? AND r.thread_id = ?", run_id, thread_id)
    if run is None:
        raise RunNotFound(run_id)
    plan = policy.plan_cancel(changes.marks(run), action, reason)
    if not plan.ends_now:  # running: stopped by the scheduler, finished once it has unwound
        if not plan.mark:
            return run, True
        conn.execute(
            "UPDATE runs SET cancel_action = ?, cancel_reason = ? WHERE run_id = ?",
            (plan.action, plan.reason, run_id),
        )
        return replace(run, cancel_action=plan.action, cancel_reason=plan.reason), True
    final = _end_pending(conn, run, plan.action, plan.reason, "", now)
    outcome = "rollback" if plan.action == "rollback" else "interrupted"
    _settle_thread(conn, thread_id, outcome, now)
    return final, False


def _supersede(
    conn: Session,
    thread_id: str,
    steps: tuple[policy.Supersede, ...],
    now: int,
) -> Admission:
    """Carries out what a plan does to the thread's inflight runs: an admission still
    without its run (the first of them stands in)."""
    runs = {run.run_id: run for run in inflight_runs(conn, thread_id)}
    admission = Admission(run=runs[steps[0].run_id])
    for step in steps:
        run = runs[step.run_id]
        if step.ends_now:
            final = _end_pending(conn, run, step.action, step.reason, step.superseded_by, now)
            changes.record_ended(admission, step, final)
            continue
        # A running run stops at its next await; the scheduler finishes it once it has unwound.
        conn.execute(
            "UPDATE runs SET cancel_action = ?, cancel_reason = ?, superseded_by = ?"
            " WHERE run_id = ?",
            (step.action, step.reason, step.superseded_by, run.run_id),
        )
        admission.cancelling.append(changes.cancelling(run, step))
    return admission


def _inflight_marks(conn: Session, thread_id: str) -> list[policy.InflightRun]:
    """The thread's inflight runs as the policy sees them, in admission order (no JSON read)."""
    rows = conn.all(
        "SELECT run_id, status, cancel_action FROM runs"
        " WHERE thread_id = ? AND status IN ('pending', 'running') ORDER BY seq",
        (thread_id,),
    )
    return [policy.InflightRun(row[0], row[1], row[2]) for row in rows]


def _end_pending(
    conn: Session, run: RunRecord, action: str, reason: str, by: str, now: int
) -> RunRecord:
    """Ends a pending run without starting it: INTERRUPTED, or deleted for a rollback."""
    if action == "rollback":
        _delete_run(conn, run.run_id, now)
    else:
        conn.execute(
            "UPDATE runs SET status = 'interrupted', end_time = ?, cancel_reason = ?,"
            " superseded_by = ? WHERE run_id = ?",
            (now, reason, by, run.run_id),
        )
    return changes.ended_pending(run, action, reason, by, now)


def _delete_run(conn: Session, run_id: str, now: int) -> None:
    """Deletes a run with its checkpoints, LangGraph's included (it is being rolled back), in
    the same transaction, remembering its request
    id for `changes.ROLLED_BACK_REQUESTS_US` (those older are forgotten now)."""
    conn.execute(
        "DELETE FROM rolled_back_requests WHERE rolled_back_time < ?",
        (now - changes.ROLLED_BACK_REQUESTS_US,),
    )
    conn.execute(
        "INSERT OR REPLACE INTO rolled_back_requests"
        " SELECT request_id, thread_id, run_id, ? FROM runs"
        " WHERE run_id = ? AND request_id IS NOT NULL",
        (now, run_id),
    )
    conn.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
    delete_langgraph_runs(conn, [run_id])
    conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))


def _settle_thread(
    conn: Session, thread_id: str, outcome: str, now: int, *, interrupts: Any = changes.KEEP
) -> bool:
    """Sets the thread's status after a run ended: BUSY while others are inflight (then
    returns True).

    A started run's end also records what the thread's latest checkpoint waits for:
    `interrupts` when it stopped waiting for input (`awaiting_input`), nothing otherwise. A
    rollback, a run that never started and one that stopped before it wrote anything
    (`policy.leaves_waiting`) leave it (the thread's state is what it was), so a thread that
    waited for input waits again.
    """
    keep = interrupts is changes.KEEP or outcome == "rollback"
    settled = conn.one(
        "UPDATE threads SET status = CASE WHEN EXISTS (SELECT 1 FROM runs WHERE thread_id = ?1"
        " AND status IN ('pending', 'running')) THEN 'busy'"
        " WHEN ?4 AND interrupts IS NOT NULL THEN 'interrupted'"
        " ELSE ?2 END,"
        " interrupts = CASE WHEN ?4 THEN interrupts ELSE ?5 END, update_time = ?3"
        " WHERE thread_id = ?1 RETURNING status",
        (
            thread_id,
            policy.THREAD_STATUS_AFTER[outcome],
            now,
            keep,
            None if keep or interrupts is None else dumps(interrupts),
        ),
    )
    return settled is not None and settled[0] == "busy"


def _set_thread_status(conn: Session, thread_id: str, status: str, now: int) -> None:
    conn.execute(
        "UPDATE threads SET status = ?, update_time = ? WHERE thread_id = ?",
        (status, now, thread_id),
    )
