"""The multitask policy as a table: every strategy against every situation of the thread."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from turnstile_server import errors, policy
from turnstile_server.errors import QueueFull, RequestIdReused, RunNotActive, ThreadBusy
from turnstile_server.policy import (
    THREAD_STATUS_AFTER,
    InflightRun,
    Plan,
    Supersede,
    plan_admission,
    plan_cancel,
    same_request,
)
from turnstile_server.store.records import RunRecord, RunSpec

NEW = "new"
MAX_QUEUED = 2

RUNNING = InflightRun("a", "running")
PENDING = InflightRun("b", "pending")
INTERRUPTING = InflightRun("a", "running", "interrupt")
ROLLING_BACK = InflightRun("a", "running", "rollback")

SITUATIONS: dict[str, list[InflightRun]] = {
    "idle": [],
    "running": [RUNNING],
    "running+pending": [RUNNING, PENDING],
    "delayed pending only": [PENDING],  # a delayed run is PENDING like any queued one
    "queue full": [RUNNING, PENDING, InflightRun("c", "pending")],
    "being interrupted": [INTERRUPTING],
    "being rolled back": [ROLLING_BACK],
    "being rolled back + pending": [ROLLING_BACK, PENDING],
}


@dataclass(frozen=True)
class Refused:
    error: type[Exception]
    run_ids: list[str] | None = None  # the inflight runs a ThreadBusy names


def interrupt(run_id: str) -> Supersede:
    return Supersede(run_id, "interrupt", f"interrupted by run {NEW}", NEW, ends_now=False)


def rollback(run_id: str) -> Supersede:
    return Supersede(run_id, "rollback", f"rolled back by run {NEW}", NEW, ends_now=False)


def interrupt_pending(run_id: str) -> Supersede:
    return Supersede(run_id, "interrupt", f"interrupted by run {NEW}", NEW, ends_now=True)


def rollback_pending(run_id: str) -> Supersede:
    return Supersede(run_id, "rollback", f"rolled back by run {NEW}", NEW, ends_now=True)


STILL_ROLLED_BACK = Supersede(
    "a",
    "rollback",
    f"rolled back: it was being rolled back when run {NEW} superseded it",
    NEW,
    ends_now=False,
)

# strategy -> situation -> the plan, or the refusal.
TABLE: dict[str, dict[str, Plan | Refused]] = {
    "reject": {
        "idle": Plan(starts_now=True),
        "running": Refused(ThreadBusy, ["a"]),
        "running+pending": Refused(ThreadBusy, ["a", "b"]),
        "delayed pending only": Refused(ThreadBusy, ["b"]),
        "queue full": Refused(ThreadBusy, ["a", "b", "c"]),
        "being interrupted": Refused(ThreadBusy, ["a"]),
        "being rolled back": Refused(ThreadBusy, ["a"]),
        "being rolled back + pending": Refused(ThreadBusy, ["a", "b"]),
    },
    "enqueue": {
        "idle": Plan(starts_now=True),
        "running": Plan(ahead=1),
        "running+pending": Plan(ahead=2),
        "delayed pending only": Plan(ahead=1),
        "queue full": Refused(QueueFull),
        "being interrupted": Plan(ahead=1),
        "being rolled back": Plan(ahead=1),
        "being rolled back + pending": Plan(ahead=2),
    },
    "interrupt": {
        "idle": Plan(starts_now=True),
        "running": Plan((interrupt("a"),), ahead=1),
        "running+pending": Plan((interrupt("a"), interrupt_pending("b")), ahead=1),
        "delayed pending only": Plan((interrupt_pending("b"),), ahead=0),
        "queue full": Plan(
            (interrupt("a"), interrupt_pending("b"), interrupt_pending("c")), ahead=1
        ),
        "being interrupted": Plan((interrupt("a"),), ahead=1),
        "being rolled back": Plan((STILL_ROLLED_BACK,), ahead=1),
        "being rolled back + pending": Plan((STILL_ROLLED_BACK, interrupt_pending("b")), ahead=1),
    },
    "rollback": {
        "idle": Plan(starts_now=True),
        "running": Plan((rollback("a"),), ahead=1),
        "running+pending": Plan((rollback("a"), rollback_pending("b")), ahead=1),
        "delayed pending only": Plan((rollback_pending("b"),), ahead=0),
        "queue full": Plan((rollback("a"), rollback_pending("b"), rollback_pending("c")), ahead=1),
        "being interrupted": Plan((rollback("a"),), ahead=1),
        "being rolled back": Plan((rollback("a"),), ahead=1),
        "being rolled back + pending": Plan((rollback("a"), rollback_pending("b")), ahead=1),
    },
}

CASES = [
    pytest.param(strategy, situation, expected, id=f"{strategy}-{situation}")
    for strategy, row in TABLE.items()
    for situation, expected in row.items()
]


def spec(strategy: str, *, after_seconds: float = 0.0, **fields: Any) -> RunSpec:
    values: dict[str, object] = {
        "thread_id": "t",
        "assistant_id": "agent",
        "graph_id": "agent",
        "input": {"messages": [{"type": "human", "content": "hi"}]},
        "multitask_strategy": strategy,
        "config": {},
        "metadata": {},
        "stream_mode": ["values"],
        "after_seconds": after_seconds,
        **fields,
    }
    return RunSpec(**values)  # type: ignore[arg-type]


def test_the_table_covers_every_strategy_and_situation() -> None:
    assert set(TABLE) == {"reject", "enqueue", "interrupt", "rollback"}
    for row in TABLE.values():
        assert set(row) == set(SITUATIONS)


@pytest.mark.parametrize(("strategy", "situation", "expected"), CASES)
def test_admission_plan(strategy: str, situation: str, expected: Plan | Refused) -> None:
    inflight = SITUATIONS[situation]
    if isinstance(expected, Refused):
        with pytest.raises(expected.error) as refused:
            plan_admission(spec(strategy), NEW, inflight, max_queued=MAX_QUEUED)
        if expected.run_ids is not None:
            assert getattr(refused.value, "inflight", None) == expected.run_ids
        return
    assert plan_admission(spec(strategy), NEW, inflight, max_queued=MAX_QUEUED) == expected


@pytest.mark.parametrize("strategy", list(TABLE))
def test_a_delayed_run_on_an_idle_thread_is_admitted_but_does_not_start_now(
    strategy: str,
) -> None:
    plan = plan_admission(spec(strategy, after_seconds=5), NEW, [], max_queued=MAX_QUEUED)
    assert plan == Plan(starts_now=False)


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
def test_a_run_that_supersedes_only_pending_runs_goes_first_but_starts_once_they_are_settled(
    strategy: str,
) -> None:
    plan = plan_admission(spec(strategy), NEW, [PENDING], max_queued=MAX_QUEUED)
    assert plan.ahead == 0
    assert not plan.starts_now, "it starts after the admission, once the thread is kicked"


def test_the_queue_limit_counts_pending_runs_only() -> None:
    full = [RUNNING, PENDING]
    assert plan_admission(spec("enqueue"), NEW, full, max_queued=2).ahead == 2
    with pytest.raises(QueueFull):
        plan_admission(spec("enqueue"), NEW, full, max_queued=1)


@pytest.mark.parametrize(
    ("run", "action", "reason", "expected"),
    [
        (PENDING, "interrupt", None, ("interrupt", "cancelled by the client", True, False)),
        (PENDING, "rollback", None, ("rollback", "rolled back by the client", True, False)),
        (RUNNING, "interrupt", None, ("interrupt", "cancelled by the client", False, True)),
        (RUNNING, "rollback", "why", ("rollback", "why", False, True)),
        (INTERRUPTING, "rollback", None, ("rollback", "rolled back by the client", False, True)),
        (ROLLING_BACK, "interrupt", None, ("rollback", "cancelled by the client", False, False)),
    ],
    ids=["pending", "pending-rollback", "running", "running-rollback", "upgrade", "rollback-stays"],
)
def test_cancel_plan(
    run: InflightRun, action: str, reason: str | None, expected: tuple[str, str, bool, bool]
) -> None:
    plan = plan_cancel(run, action, reason)
    assert (plan.action, plan.reason, plan.ends_now, plan.mark) == expected


@pytest.mark.parametrize("status", ["success", "error", "timeout", "interrupted"])
def test_cancelling_an_ended_run_is_refused(status: str) -> None:
    with pytest.raises(RunNotActive):
        plan_cancel(InflightRun("a", status), "interrupt", None)


def test_thread_status_after_each_ending() -> None:
    assert THREAD_STATUS_AFTER == {
        "success": "idle",
        "awaiting_input": "interrupted",
        "rollback": "idle",
        "interrupted": "interrupted",
        "error": "error",
        "timeout": "error",
    }


def record_for(asked: RunSpec) -> RunRecord:
    return RunRecord(
        run_id="r",
        thread_id=asked.thread_id,
        assistant_id=asked.assistant_id,
        graph_id=asked.graph_id,
        status="success",
        multitask_strategy=asked.multitask_strategy,
        input={"messages": [{"type": "human", "content": "hi", "id": "made-up"}]},
        config=asked.config,
        metadata=asked.metadata,
        stream_mode=asked.stream_mode,
        create_time=0,
        start_time=None,
        end_time=None,
        not_before=0,
        attempt=1,
        error=None,
        cancel_action=None,
        cancel_reason="",
        superseded_by="",
        seq=1,
    )


def test_a_repeated_request_id_matches_its_run_whatever_message_ids_were_made_up() -> None:
    asked = spec("enqueue", request_id="q")
    same_request(asked, record_for(asked))


@pytest.mark.parametrize(
    ("field", "value"),
    [("metadata", {"x": 1}), ("multitask_strategy", "reject"), ("durability", "exit")],
)
def test_a_repeated_request_id_asking_for_something_else_is_refused(field: str, value: Any) -> None:
    asked = spec("enqueue", request_id="q")
    with pytest.raises(RequestIdReused):
        same_request(spec("enqueue", request_id="q", **{field: value}), record_for(asked))


# A run's admission on an idle thread that waits for input (`plan_pending`), as a table:
# (what the thread waits on, the run's fields) -> the discarded interrupt ids, or the refusal.

A, B = "a" * 32, "b" * 32
WAITS = {
    "waits for nothing": None,
    "stopped before a node": [],
    "one interrupt": [{"id": A, "value": "ok?", "task_id": "t1"}],
    "two interrupts": [
        {"id": A, "value": 1, "task_id": "t1"},
        {"id": B, "value": 2, "task_id": "t2"},
    ],
}
NEW_INPUT: dict[str, Any] = {}
RESUME: dict[str, Any] = {"input": None, "command": {"resume": "yes"}}
RESUME_A: dict[str, Any] = {"input": None, "command": {"resume": {A: "yes"}}}
RESUME_AB: dict[str, Any] = {"input": None, "command": {"resume": {A: 1, B: 2}}}
UPDATE: dict[str, Any] = {"input": None, "command": {"update": {"x": 1}}}
CONTINUE: dict[str, Any] = {"input": None}
FORK: dict[str, Any] = {"checkpoint_id": "c1"}
REJECTING: dict[str, Any] = {"on_pending_interrupt": "reject"}
PENDING_CASES = [
    ("waits for nothing", NEW_INPUT, ()),
    ("waits for nothing", RESUME, errors.NothingToResume),
    ("waits for nothing", RESUME_A, errors.NothingToResume),
    ("waits for nothing", UPDATE, ()),
    ("waits for nothing", REJECTING, ()),
    ("stopped before a node", NEW_INPUT, ()),
    ("stopped before a node", RESUME, ()),
    ("stopped before a node", RESUME_A, errors.UnknownInterrupt),
    ("stopped before a node", CONTINUE, ()),
    ("stopped before a node", REJECTING, errors.AwaitingInput),
    ("one interrupt", NEW_INPUT, (A,)),
    ("one interrupt", RESUME, ()),
    ("one interrupt", RESUME_A, ()),
    ("one interrupt", RESUME_AB, errors.UnknownInterrupt),
    ("one interrupt", UPDATE, ()),
    ("one interrupt", CONTINUE, ()),
    ("one interrupt", FORK, ()),
    ("one interrupt", REJECTING, errors.AwaitingInput),
    ("one interrupt", {**REJECTING, **RESUME}, ()),
    ("two interrupts", NEW_INPUT, (A, B)),
    ("two interrupts", RESUME_A, ()),
    ("two interrupts", RESUME_AB, ()),
]


@pytest.mark.parametrize(("waits", "fields", "expected"), PENDING_CASES)
def test_admission_on_a_thread_waiting_for_input(
    waits: str, fields: dict[str, Any], expected: Any
) -> None:
    run = spec("enqueue", **fields)
    if isinstance(expected, tuple):
        assert policy.plan_pending(run, WAITS[waits]) == expected
    else:
        with pytest.raises(expected):
            policy.plan_pending(run, WAITS[waits])


def test_a_resume_dict_with_other_keys_is_a_value_not_a_map() -> None:
    run = spec("enqueue", input=None, command={"resume": {"approved": True}})
    assert policy.plan_pending(run, WAITS["one interrupt"]) == ()


# What a run's end leaves of what its thread waits for (`leaves_waiting`), as a table:
# (outcome, the run's fields, whether it wrote any of LangGraph's rows) -> kept or not.

LEAVES_CASES = [
    ("rollback", NEW_INPUT, True, True),
    ("interrupted", RESUME, False, True),  # a resume cancelled before its first step
    ("error", RESUME, False, True),  # a resume refused when it started
    ("timeout", CONTINUE, False, True),
    ("interrupted", FORK, False, True),
    ("interrupted", RESUME, True, False),  # it wrote a step: the thread moved on
    ("error", RESUME, True, False),  # the resumed node failed: its error is a write
    ("interrupted", NEW_INPUT, False, False),  # new input always changes the state
    ("error", NEW_INPUT, False, False),
    ("success", RESUME, False, False),  # a success says itself what the thread waits for
]


@pytest.mark.parametrize(("outcome", "fields", "wrote", "kept"), LEAVES_CASES)
def test_what_a_run_end_leaves_of_the_wait_for_input(
    outcome: str, fields: dict[str, Any], wrote: bool, kept: bool
) -> None:
    asked = spec("enqueue", **fields)
    run = replace(
        record_for(asked),
        input=asked.input,
        command=asked.command,
        checkpoint_id=asked.checkpoint_id,
    )
    assert policy.leaves_waiting(outcome, run, wrote) is kept
