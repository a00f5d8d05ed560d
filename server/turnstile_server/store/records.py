"""Plain records the store returns: no protobuf, no SQL."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from turnstile_server import clock

INFLIGHT = ("pending", "running")
RUN_STATUSES = ("pending", "running", "success", "error", "timeout", "interrupted")
THREAD_STATUSES = ("idle", "busy", "interrupted", "error")
STRATEGIES = ("reject", "interrupt", "rollback", "enqueue")
DURABILITIES = ("sync", "async", "exit")  # when a run's step checkpoints are written
STREAM_MODES = (
    "values",
    "updates",
    "messages",  # one chunk per event; `[chunk, metadata]` for LangGraph (`messages-tuple`)
    "custom",
    "debug",
    "tasks",
    "checkpoints",
    "events",  # astream_events v2
    "messages-partial",  # LangGraph Platform's messages/metadata|partial|complete
)
ON_PENDING_INTERRUPT = ("discard", "reject")  # what new input does on a thread awaiting input


def now_us() -> int:
    """Returns the time in microseconds since the epoch, on the server's clock (`clock.CLOCK`:
    the wall clock at start, advanced by the monotonic clock)."""
    return clock.CLOCK.now_us()


@dataclass(frozen=True, slots=True)
class RunError:
    """Why a run failed."""

    type: str
    message: str


@dataclass(frozen=True, slots=True)
class AssistantRecord:
    """An assistant: a graph with configuration."""

    assistant_id: str
    graph_id: str
    name: str
    config: dict[str, Any]
    metadata: dict[str, Any]
    create_time: int
    update_time: int


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    """A thread's row; its values live in the checkpoints.

    `interrupts` is None unless the thread waits for input (its latest checkpoint stopped at
    an `interrupt()`, `interrupt_before` or `interrupt_after`): then the pending interrupts as
    JSON objects `{id, value, task_id}` (none for a stop before or after a node).
    """

    thread_id: str
    metadata: dict[str, Any]
    status: str
    create_time: int
    update_time: int
    interrupts: list[dict[str, Any]] | None = None

    @property
    def interruption(self) -> str:
        """Why the thread is interrupted: "awaiting_input", "cancelled"; "" when it is not."""
        if self.status != "interrupted":
            return ""
        return "cancelled" if self.interrupts is None else "awaiting_input"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """What a caller asks of a run beyond its input, stored as asked and shown back on `Run`.

    `RunSpec` and `RunRecord` both have these fields, so a new stored run field is declared
    here once: each SQL backend stores it in a column of the same name
    (`store/run_columns.py` derives its encoding from the annotation), and a repeated request
    id must ask for the same (`policy.same_request`).
    """

    timeout_seconds: float | None = None
    durability: str = "sync"
    context: dict[str, Any] | None = None
    """LangGraph's runtime context (`Runtime.context`)."""
    stream_subgraphs: bool = False
    command: dict[str, Any] | None = None
    """`{"resume": v}` (`v` may map interrupt ids to values), `{"update": {...}}`,
    `{"goto": [...]}`, or several of them; LangGraph's `Command`."""
    interrupt_before: tuple[str, ...] | None = None
    """Nodes to stop before; `("*",)` means every node."""
    interrupt_after: tuple[str, ...] | None = None
    checkpoint_id: str | None = None
    """Continue from this checkpoint (time travel) instead of the thread's latest."""
    close_tool_calls: bool | None = None
    """Close dangling tool calls when interrupted; None means the server's default."""
    on_pending_interrupt: str = "discard"
    """What new input does on a thread waiting for input: "discard" its interrupts, "reject"."""


RUN_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(RunOptions))
"""The names of `RunOptions`' fields, in declaration order."""


def options_of(value: RunOptions) -> dict[str, Any]:
    """The run options of a spec or a record, by name (keyword arguments of either)."""
    return {name: getattr(value, name) for name in RUN_OPTIONS}


@dataclass(frozen=True, slots=True)
class RunRecord(RunOptions):
    """A run's row, with its queue position computed while it is pending."""

    run_id: str
    thread_id: str
    assistant_id: str
    graph_id: str
    status: str
    multitask_strategy: str
    input: dict[str, Any] | None
    config: dict[str, Any]
    metadata: dict[str, Any]
    stream_mode: list[str]
    create_time: int
    start_time: int | None
    end_time: int | None
    not_before: int
    attempt: int
    error: RunError | None
    cancel_action: str | None
    cancel_reason: str
    superseded_by: str
    seq: int
    queue_position: int | None = None
    discarded_interrupts: tuple[str, ...] = ()
    """The ids of the interrupts the thread waited on that this run's new input superseded."""
    epoch: int = 0
    """The fencing token of the attempt executing the run, which every write of that attempt
    presents (a backend shared by replicas bumps it at each claim); 0: unfenced (SQLite)."""

    @property
    def inflight(self) -> bool:
        """Whether the run is pending or running."""
        return self.status in INFLIGHT


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A checkpoint: the update a run's input or step made, in thread order."""

    seq: int
    checkpoint_id: str
    thread_id: str
    run_id: str
    step: int
    source: str
    update: dict[str, Any]
    create_time: int


@dataclass(frozen=True, slots=True)
class RunSpec(RunOptions):
    """What a caller asks for when creating a run, validated."""

    thread_id: str
    assistant_id: str
    graph_id: str
    input: dict[str, Any] | None
    multitask_strategy: str
    config: dict[str, Any]
    metadata: dict[str, Any]
    stream_mode: list[str]
    after_seconds: float = 0.0
    create_thread: bool = False
    request_id: str = ""


@dataclass(slots=True)
class Admission:
    """The outcome of admitting a run.

    `ended` are pending runs interrupted without starting, `deleted` pending runs rolled back,
    `cancelling` running runs that must now be stopped; `existing` means `request_id` matched.
    """

    run: RunRecord
    ended: list[RunRecord] = field(default_factory=list)
    deleted: list[RunRecord] = field(default_factory=list)
    cancelling: list[RunRecord] = field(default_factory=list)
    existing: bool = False
    start: Start | None = None  # the run was started in its admission too


@dataclass(slots=True)
class Recovery:
    """What `recover` did: runs requeued, runs it ended, runs it deleted (rolled back)."""

    requeued: int = 0
    ended: list[RunRecord] = field(default_factory=list)
    deleted: list[RunRecord] = field(default_factory=list)
    taken: list[RunRecord] = field(default_factory=list)
    """The requeued runs taken from an expired lease, at the epoch the takeover gave them
    (what their old attempt can no longer write, or publish)."""


@dataclass(frozen=True, slots=True)
class Start:
    """What starting a thread's next run did: started `run` (with `checkpoints` written so far,
    `input` if it wrote the input now), or found it due in `delay` seconds, or nothing to do."""

    run: RunRecord | None = None
    checkpoints: int = 0
    input: CheckpointRecord | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Ended:
    """What ending a run did: the run as it ended (`rolled_back`: deleted with its
    checkpoints), and the thread's next run if it was started in the same write (`next`)."""

    run: RunRecord
    rolled_back: bool
    next: Start = Start()


def new_assistant(
    assistant_id: str, graph_id: str, name: str, config: dict[str, Any], metadata: dict[str, Any]
) -> AssistantRecord:
    """Builds a record for a new assistant stamped now."""
    now = now_us()
    return AssistantRecord(assistant_id, graph_id, name, config, metadata, now, now)
