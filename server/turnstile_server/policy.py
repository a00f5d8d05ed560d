"""The multitask policy: what admitting a run does to its thread's inflight runs.

Pure: plain values in, a plan (or a refusal) out, no I/O. A storage backend reads the thread's
inflight runs inside its admission transaction, asks `plan_admission` and carries the plan out
in the same transaction; `same_request` decides whether a repeated `request_id` asks for the
run it already got.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from turnstile_server.errors import (
    AwaitingInput,
    NothingToResume,
    QueueFull,
    RequestIdReused,
    RunNotActive,
    ThreadBusy,
    UnknownInterrupt,
)
from turnstile_server.store.records import RUN_OPTIONS

if TYPE_CHECKING:  # the records only as types: the store's modules import this one
    from turnstile_server.store.records import RunRecord, RunSpec


@dataclass(frozen=True, slots=True)
class InflightRun:
    """One of the thread's PENDING or RUNNING runs, as the policy needs to know it."""

    run_id: str
    status: str  # "pending" or "running" (any status, for `plan_cancel`)
    cancel_action: str | None = None  # "interrupt" or "rollback" while it is being cancelled


@dataclass(frozen=True, slots=True)
class Supersede:
    """What the new run's admission does to one inflight run.

    `ends_now`: a pending run ends without starting (INTERRUPTED, or deleted for a rollback);
    otherwise the running run is marked with `action`, to be stopped at its next await and
    finished as `action` says once it has unwound.
    """

    run_id: str
    action: str  # "interrupt" or "rollback"
    reason: str
    superseded_by: str
    ends_now: bool


@dataclass(frozen=True, slots=True)
class Plan:
    """An admission: the runs it supersedes, in admission order; how many runs stay ahead
    of the new one (its queue position); whether it is due at once as the thread's next run
    (no run was inflight, no `after_seconds`), so that it may start in its admission."""

    supersede: tuple[Supersede, ...] = ()
    ahead: int = 0
    starts_now: bool = False


def plan_admission(
    spec: RunSpec, run_id: str, inflight: Sequence[InflightRun], *, max_queued: int
) -> Plan:
    """Decides the admission of run `run_id` asking for `spec` on a thread whose inflight
    runs are `inflight` (admission order).

    Raises ThreadBusy (`reject` with inflight runs; nothing may be written) or QueueFull
    (`enqueue` with `max_queued` runs pending already).
    """
    strategy = spec.multitask_strategy
    starts_now = not inflight and spec.after_seconds <= 0
    if not inflight:
        return Plan(starts_now=starts_now)
    if strategy == "reject":
        raise ThreadBusy(spec.thread_id, [run.run_id for run in inflight])
    if strategy == "enqueue":
        pending = sum(run.status == "pending" for run in inflight)
        if pending >= max_queued:
            raise QueueFull(spec.thread_id, max_queued)
        return Plan(ahead=len(inflight), starts_now=starts_now)
    if strategy not in ("interrupt", "rollback"):
        raise ValueError(f"unknown multitask strategy {strategy!r}")
    supersede = tuple(_supersede(run, strategy, run_id) for run in inflight)
    # The running runs stay inflight until they have unwound: the new run goes after them.
    ahead = sum(not s.ends_now for s in supersede)
    return Plan(supersede=supersede, ahead=ahead, starts_now=starts_now)


def _supersede(run: InflightRun, strategy: str, by: str) -> Supersede:
    if run.status == "pending":
        verb = "interrupted" if strategy == "interrupt" else "rolled back"
        return Supersede(run.run_id, strategy, f"{verb} by run {by}", by, ends_now=True)
    if strategy == "rollback":
        return Supersede(run.run_id, "rollback", f"rolled back by run {by}", by, ends_now=False)
    if run.cancel_action == "rollback":
        # A rollback under way stays one: the run is deleted, so its reason says so.
        reason = f"rolled back: it was being rolled back when run {by} superseded it"
        return Supersede(run.run_id, "rollback", reason, by, ends_now=False)
    return Supersede(run.run_id, "interrupt", f"interrupted by run {by}", by, ends_now=False)


@dataclass(frozen=True, slots=True)
class Cancel:
    """What a CancelRun does: a pending run ends (or is deleted) now (`ends_now`); a running
    one is marked with `action` and `reason` (`mark`), unless a rollback is under way: that
    stays one, and the run is left as it is."""

    action: str
    reason: str
    ends_now: bool
    mark: bool


def plan_cancel(run: InflightRun, action: str, reason: str | None) -> Cancel:
    """Decides a CancelRun with `action` of `run`; RunNotActive when the run has ended."""
    if run.status not in ("pending", "running"):
        raise RunNotActive(run.run_id, run.status)
    reason = reason or (
        "cancelled by the client" if action == "interrupt" else "rolled back by the client"
    )
    if run.status == "pending":
        return Cancel(action, reason, ends_now=True, mark=False)
    if run.cancel_action == "rollback":
        return Cancel("rollback", reason, ends_now=False, mark=False)
    return Cancel(action, reason, ends_now=False, mark=True)


THREAD_STATUS_AFTER = {
    "success": "idle",
    "awaiting_input": "interrupted",  # a success that stopped at an interrupt
    "rollback": "idle",
    "interrupted": "interrupted",
    "error": "error",
    "timeout": "error",
}
"""A thread's status once its last inflight run ended so (BUSY while others are inflight)."""


def is_new_input(spec: RunSpec | RunRecord) -> bool:
    """Whether a run starts its graph over with new input (not a command, not `input=None`
    continuing the thread, not a fork from an earlier checkpoint)."""
    return spec.input is not None and spec.command is None and spec.checkpoint_id is None


def pending_ids(pending: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ids of a thread's pending interrupts (`ThreadRecord.interrupts`), in order."""
    return [str(interrupt.get("id", "")) for interrupt in pending if interrupt.get("id")]


def leaves_waiting(outcome: str, run: RunRecord, wrote: bool) -> bool:
    """Whether a run's end leaves what its thread waits for as it was: a rollback, or a run
    that stopped (cancelled, failed, timed out) having written nothing of the graph's state
    (`wrote`: no checkpoint and no pending write of LangGraph's), with no new input either
    (a resume cancelled, or refused, before its first step). The thread's latest checkpoint is
    then still the one it waited on, so it waits again, with the same interrupts."""
    if outcome == "rollback":
        return True
    return outcome in ("interrupted", "error", "timeout") and not wrote and not is_new_input(run)


def check_resume(
    thread_id: str, command: Mapping[str, Any] | None, pending: Sequence[Mapping[str, Any]] | None
) -> None:
    """Refuses a `command` that resumes what a checkpoint does not wait on (`pending`, as
    `ThreadRecord.interrupts`; None: nothing): NothingToResume, or UnknownInterrupt for a
    resume by id naming an interrupt not pending. Anything else passes."""
    if not command or "resume" not in command:
        return
    if pending is None:
        raise NothingToResume(thread_id)
    resume = command["resume"]
    if isinstance(resume, dict) and resume and all(map(is_interrupt_id, resume)):
        known = pending_ids(pending)
        unknown = [key for key in resume if key not in known]
        if unknown:
            raise UnknownInterrupt(thread_id, unknown, known)


def plan_pending(spec: RunSpec, pending: Sequence[Mapping[str, Any]] | None) -> tuple[str, ...]:
    """Decides a run's admission on an idle thread whose latest checkpoint waits for input
    with `pending` interrupts (None: it waits for nothing); returns the interrupt ids its new
    input discards (LangGraph starts over from START).

    Raises NothingToResume (a resume on a thread that waits for nothing), UnknownInterrupt
    (a resume by id naming an interrupt not pending) or AwaitingInput (new input with
    `on_pending_interrupt` "reject").
    """
    if spec.command and "resume" in spec.command:
        check_resume(spec.thread_id, spec.command, pending)
        return ()
    if pending is None or not is_new_input(spec):
        return ()
    ids = pending_ids(pending)
    if spec.on_pending_interrupt == "reject":
        raise AwaitingInput(spec.thread_id, ids)
    return tuple(ids)


def is_interrupt_id(key: object) -> bool:
    """Whether a resume map's key is shaped like LangGraph's interrupt ids (32 lower-case hex
    digits): LangGraph reads a resume dict with only such keys as values by interrupt id."""
    return isinstance(key, str) and len(key) == 32 and all(c in "0123456789abcdef" for c in key)


def same_request(spec: RunSpec, run: RunRecord) -> None:
    """Refuses (RequestIdReused) `run`, admitted before for `spec.request_id`, when `spec`
    asks for something else."""
    asked_and_got: list[tuple[str, Any, Any]] = [
        ("thread_id", spec.thread_id, run.thread_id),
        ("assistant_id", spec.assistant_id, run.assistant_id),
        ("multitask_strategy", spec.multitask_strategy, run.multitask_strategy),
        ("input", _without_message_ids(spec.input), _without_message_ids(run.input)),
        ("metadata", spec.metadata, run.metadata),
        ("config", spec.config, run.config),
        ("stream_mode", spec.stream_mode, run.stream_mode),
        # What the run does to the thread (as LangGraph runs it, too): a retry asks the same.
        *((name, getattr(spec, name), getattr(run, name)) for name in RUN_OPTIONS),
    ]
    for field_name, asked, got in asked_and_got:
        if asked != got:
            raise RequestIdReused("run", spec.request_id, field_name)


def _without_message_ids(values: dict[str, Any] | None) -> Any:
    """The input with its messages' ids left out: the server makes up the ids not given."""
    if values is None or not isinstance(values.get("messages"), list):
        return values
    messages = [{k: v for k, v in m.items() if k != "id"} for m in values["messages"]]
    return {**values, "messages": messages}
