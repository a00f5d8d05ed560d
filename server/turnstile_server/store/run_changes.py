"""What the run writes of both SQL backends do to a run, apart from their SQL.

`store/sqlite/run_writes.py` and `store/postgres/run_writes.py` carry out the same plans on
different databases (one synchronous, one asynchronous): the decisions they share (how a run
left RUNNING by a previous process is settled) and the record each change gives back live
here once, the statements that store them in each backend.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from turnstile_server import policy
from turnstile_server.store.records import Admission, Recovery, RunError, RunRecord

ROLLED_BACK_REQUESTS_US = 24 * 3600 * 1_000_000
"""How long a rolled-back run's request id is remembered: a day, where the SDK retries a call
for seconds (five attempts, pauses of at most 2 s)."""

KEEP: Any = object()
"""`_settle_thread`'s `interrupts` when the run never changed the thread's state."""


@dataclass(frozen=True, slots=True)
class Recovered:
    """How a run left RUNNING by a previous process is settled: `outcome` is "rollback"
    (deleted), "interrupted", "error" (with `error`), or "requeue" (pending again)."""

    outcome: str
    error: RunError | None = None


def recovered(run: RunRecord, max_attempts: int) -> Recovered:
    """Settles a run found RUNNING at start: a cancellation it was under is carried out, a run
    cut off `max_attempts` times ends ERROR, any other goes back to PENDING."""
    if run.cancel_action == "rollback":
        return Recovered("rollback")
    if run.cancel_action is not None:
        return Recovered("interrupted")
    if run.attempt >= max_attempts:
        return Recovered(
            "error",
            RunError(
                "MaxAttemptsExceeded",
                f"the run was cut off {run.attempt} times (the server stopped or"
                f" crashed during it); giving up after {max_attempts} attempts",
            ),
        )
    return Recovered("requeue")


def note_recovered(recovery: Recovery, run: RunRecord, settled: Recovered, now: int) -> None:
    """Records in `recovery` what settling `run` as `settled` at `now` gives back (the
    backend's statements carry it out)."""
    if settled.outcome == "rollback":
        recovery.deleted.append(ended(run, "interrupted", now, None))
    elif settled.outcome == "requeue":
        recovery.requeued += 1
    else:
        recovery.ended.append(ended(run, settled.outcome, now, settled.error))


def ended_columns(settled: Recovered, now: int) -> tuple[str, int, str | None, str | None]:
    """A recovered run's `status`, `end_time`, `error_type` and `error_message` columns."""
    error = settled.error
    return (
        settled.outcome,
        now,
        error.type if error else None,
        error.message if error else None,
    )


def ended(run: RunRecord, status: str, now: int, error: RunError | None) -> RunRecord:
    """`run`, ended `status` at `now`."""
    return replace(run, status=status, end_time=now, error=error, queue_position=None)


def started(run: RunRecord, now: int) -> RunRecord:
    """`run`, its next attempt begun at `now`."""
    return replace(
        run, status="running", attempt=run.attempt + 1, start_time=now, queue_position=None
    )


def ended_pending(run: RunRecord, action: str, reason: str, by: str, now: int) -> RunRecord:
    """A pending run ended without starting: INTERRUPTED (or deleted, for a rollback)."""
    return replace(
        run,
        status="interrupted",
        end_time=now,
        cancel_reason=reason,
        superseded_by=by,
        cancel_action=action,
        queue_position=None,
    )


def finished(
    run: RunRecord,
    status: str,
    now: int,
    error: RunError | None,
    marks: tuple[str | None, str, str],
) -> RunRecord:
    """A started run ended `status`, with the cancellation marks its row held at its end
    (`cancel_action`, `cancel_reason`, `superseded_by`)."""
    action, reason, superseded_by = marks
    return replace(
        run,
        status=status,
        end_time=now,
        error=error,
        cancel_action=action,
        cancel_reason=reason,
        superseded_by=superseded_by,
        queue_position=None,
    )


def cancelling(run: RunRecord, step: policy.Supersede) -> RunRecord:
    """A running run marked to stop at its next await, superseded as `step` says."""
    return replace(
        run,
        cancel_action=step.action,
        cancel_reason=step.reason,
        superseded_by=step.superseded_by,
    )


def record_ended(admission: Admission, step: policy.Supersede, final: RunRecord) -> None:
    """Records a superseded pending run ended at once: deleted (rollback) or ended."""
    (admission.deleted if step.action == "rollback" else admission.ended).append(final)


def marks(run: RunRecord) -> policy.InflightRun:
    """The run as the policy sees it."""
    return policy.InflightRun(run.run_id, run.status, run.cancel_action)
