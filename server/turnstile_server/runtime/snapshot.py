"""A thread's state as a runtime shows it: values plus what LangGraph knows about what comes next.

The native runtime's state is its values alone (`next`, `tasks` and `interrupts` stay empty); a
LangGraph graph's state is its `StateSnapshot`, carried here as plain values so that the API
layer shows either without importing LangGraph. These records are the contract between the
runtimes (which fill them) and the API (which puts them on the wire).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CheckpointRef:
    """Where a checkpoint is: LangGraph's `configurable` of `thread_id`, namespace and id."""

    thread_id: str
    checkpoint_id: str
    checkpoint_ns: str = ""


@dataclass(frozen=True, slots=True)
class PendingInterrupt:
    """A value a node passed to `interrupt()` (or none, for `interrupt_before`/`after`)."""

    id: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class TaskView:
    """A task of the next superstep: the node it runs, its interrupts, its error if it failed."""

    id: str
    name: str
    interrupts: tuple[PendingInterrupt, ...] = ()
    error: str | None = None
    checkpoint: CheckpointRef | None = None
    """For a subgraph task: where the subgraph's own state is (its namespace's checkpoint)."""
    result: dict[str, Any] | None = None
    """The task's writes when it already ran (history), None otherwise."""


@dataclass(frozen=True, slots=True)
class GraphSnapshot:
    """A thread's state at one checkpoint, as `GetThreadState`/`GetThreadHistory` show it."""

    values: dict[str, Any]
    checkpoint: CheckpointRef | None
    parent_checkpoint: CheckpointRef | None = None
    next: tuple[str, ...] = ()
    tasks: tuple[TaskView, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    """LangGraph's checkpoint metadata: `step`, `source`, `run_id`, `parents`, ..."""
    created_at: str | None = None
    """ISO 8601, as LangGraph's checkpoint `ts`."""
    run_id: str = ""
    step: int = 0

    @property
    def interrupts(self) -> tuple[PendingInterrupt, ...]:
        """Every pending interrupt of every task, in task order."""
        return tuple(i for task in self.tasks for i in task.interrupts)

    @property
    def awaiting_input(self) -> bool:
        """True while this checkpoint waits for a human: a pending interrupt, or a stop before
        or after a node (`next` not empty at the end of a run)."""
        return bool(self.next)
