"""The SDK's result shapes: plain dicts (TypedDicts) keyed by the proto field names.

Timestamps are ISO-8601 strings (`None` when unset); enums are lower-case strings without
their prefix. JSON values travel as `google.protobuf.Struct`, whose only number type is a
double: every number comes back as a `float` (`1` is returned as `1.0`), and integers beyond
2**53 lose precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple, TypeAlias, TypedDict

MultitaskStrategy: TypeAlias = Literal["reject", "interrupt", "rollback", "enqueue"]
RunStatus: TypeAlias = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
ThreadStatus: TypeAlias = Literal["idle", "busy", "interrupted", "error"]
StreamMode: TypeAlias = Literal[
    "values",
    "updates",
    "messages",
    "messages-tuple",
    "custom",
    "debug",
    "tasks",
    "checkpoints",
    "events",
    "messages-partial",
]
"""`messages` (alias `messages-tuple`) streams one chunk per event, `[chunk, metadata]` for a
LangGraph graph; `messages-partial` is LangGraph Platform's accumulated `messages/metadata`,
`messages/partial`, `messages/complete` form. `debug`, `tasks`, `checkpoints` and `events`
come from LangGraph graphs only."""
CancelAction: TypeAlias = Literal["interrupt", "rollback"]
IfNotExists: TypeAlias = Literal["reject", "create"]
IfExists: TypeAlias = Literal["raise", "do_nothing"]
CheckpointSource: TypeAlias = Literal["input", "step", "update", "fork"]
OnDisconnect: TypeAlias = Literal["continue", "cancel"]
Durability: TypeAlias = Literal["sync", "async", "exit"]
OnPendingInterrupt: TypeAlias = Literal["discard", "reject"]
Interruption: TypeAlias = Literal["cancelled", "awaiting_input"]

Json: TypeAlias = dict[str, Any]
"""A JSON object: input, values, metadata, config."""


class Command(TypedDict, total=False):
    """How a run continues a thread, as LangGraph's `Command` (langgraph_sdk's `Command`).

    `resume` is what the pending `interrupt()` returns; a dict whose keys are interrupt ids
    resumes each of those interrupts with its value. `update` is applied through the graph's
    reducers; `goto` names the node(s) to go to.
    """

    resume: Any
    update: Json
    goto: str | Sequence[str]


class Interrupt(TypedDict):
    """A value a node passed to `interrupt()`, waiting for an answer."""

    id: str
    value: Any


class CheckpointRef(TypedDict):
    """Where a checkpoint is (langgraph_sdk's `Checkpoint`)."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str | None
    checkpoint_map: dict[str, Any] | None


class ThreadTask(TypedDict):
    """A task of a checkpoint's next superstep (langgraph_sdk's `ThreadTask`)."""

    id: str
    name: str
    error: str | None
    interrupts: list[Interrupt]
    checkpoint: CheckpointRef | None
    state: None
    result: Json | None


class ThreadUpdateStateResponse(TypedDict):
    """What `threads.update_state` returns: the checkpoint it wrote."""

    checkpoint: CheckpointRef


class RunError(TypedDict):
    """Why a run failed."""

    type: str
    message: str


class Run(TypedDict):
    """One execution of an assistant on a thread."""

    run_id: str
    thread_id: str
    assistant_id: str
    status: RunStatus
    multitask_strategy: MultitaskStrategy
    metadata: Json
    create_time: str | None
    start_time: str | None
    end_time: str | None
    attempt: int
    error: RunError | None
    cancel_reason: str | None
    """Why the run was interrupted or is being cancelled; `None` when it was not."""
    superseded_by: str | None
    """The run whose admission interrupted or rolled back this one; `None` when none did."""
    queue_position: int | None
    """While pending: how many runs of the thread go before it (0 = next); else `None`."""
    timeout_seconds: float | None
    durability: Durability
    """When the run's checkpoints are written: "sync", "async" or "exit"."""
    context: Json | None
    stream_subgraphs: bool
    command: Command | None
    interrupt_before: list[str] | None
    interrupt_after: list[str] | None
    checkpoint_id: str | None
    close_tool_calls: bool | None
    """Whether an interrupt closes the run's dangling tool calls; `None`: the server's default."""
    discarded_interrupts: list[str]
    """The interrupt ids the thread waited on that this run's new input left unanswered."""
    on_pending_interrupt: OnPendingInterrupt | None


class RunArguments(TypedDict, total=False):
    """The keyword arguments of the admission methods (`runs.create`, `wait`, `wait_run`,
    `stream`): each is the field of its name of `CreateRunRequest`, `WaitRunRequest` and
    `StreamRunRequest`. Omitted or `None`: the server's default. An unknown string raises
    `ValueError` before any call is made.
    """

    input: Mapping[str, Any] | None
    metadata: Mapping[str, Any] | None
    config: Mapping[str, Any] | None
    stream_mode: StreamMode | Sequence[StreamMode] | None
    """One of "values", "updates", "messages", "custom", ... or a list of them."""
    multitask_strategy: MultitaskStrategy | None
    """What the run does to the thread's inflight runs; "enqueue" is the server default."""
    after_seconds: float | None
    """Delays the run's start."""
    if_not_exists: IfNotExists | None
    """What a missing thread does: "reject" (the default) or "create"."""
    request_id: str | None
    """An idempotency key; generated when omitted, so that a retried call admits one run."""
    timeout_seconds: float | None
    """The time limit of each attempt of the run."""
    durability: Durability | None
    """When the run's checkpoints are written: "sync" (each step's before the next step),
    "async" (while the next step runs) or "exit" (when the run ends)."""
    command: Command | Mapping[str, Any] | None
    """Continues a thread waiting for input (LangGraph): `{"resume": value}`, `{"resume":
    {interrupt_id: value}}`, `{"update": {...}}`, `{"goto": "node"}`; not with `input`."""
    context: Mapping[str, Any] | None
    """The graph's runtime context (LangGraph)."""
    stream_subgraphs: bool
    """Streams the subgraphs' events too (LangGraph)."""
    interrupt_before: Literal["*"] | Sequence[str] | None
    """Stops the run before these nodes ("*": every node; LangGraph)."""
    interrupt_after: Literal["*"] | Sequence[str] | None
    """Stops the run after these nodes ("*": every node; LangGraph)."""
    checkpoint_id: str | None
    """Continues from an earlier checkpoint (time travel; LangGraph)."""
    close_tool_calls: bool | None
    """Whether an interrupt closes the tool calls it leaves dangling."""
    on_pending_interrupt: OnPendingInterrupt | None
    """What new input does on a thread waiting for input: "discard" its interrupts
    (LangGraph's behaviour, recorded on the run) or "reject" the run
    (`FailedPreconditionError`, reason `AWAITING_INPUT`)."""


class StreamRunArguments(RunArguments, total=False):
    """`runs.stream`'s keyword arguments: the admission's, and what a disconnect does."""

    on_disconnect: OnDisconnect | None
    """What the server does with the run when this client goes away before it ends:
    "continue" (the server default) or "cancel" (interrupt it)."""


class Thread(TypedDict):
    """A conversation thread with its current state."""

    thread_id: str
    metadata: Json
    status: ThreadStatus
    values: Json
    create_time: str | None
    update_time: str | None
    interrupts: dict[str, list[Interrupt]]
    """While the thread waits for input: its pending interrupts by task id (langgraph_sdk's
    shape); `{}` otherwise, and for a stop at `interrupt_before`/`interrupt_after`."""
    interruption: Interruption | None
    """Why the thread is "interrupted": "awaiting_input" (its latest checkpoint waits for an
    answer) or "cancelled" (its last run was cancelled); `None` for any other status."""


class Assistant(TypedDict):
    """A registered graph plus the configuration and metadata to run it with."""

    assistant_id: str
    graph_id: str
    name: str
    config: Json
    metadata: Json
    create_time: str | None
    update_time: str | None


class ThreadState(TypedDict):
    """A checkpoint: a saved state of a thread, with langgraph_sdk's `ThreadState` keys.

    `values`, `next`, `checkpoint`, `metadata`, `created_at`, `parent_checkpoint`, `tasks` and
    `interrupts` are langgraph_sdk's; `checkpoint_id`, `thread_id`, `run_id`, `step`, `source`
    and `create_time` are Turnstile's flat view of the same checkpoint. `checkpoint_id`,
    `run_id`, `source` and `create_time` are `None` for the state of a thread that has no
    checkpoint yet; `values` is then `{}`.
    """

    values: Json
    next: list[str]
    checkpoint: CheckpointRef
    metadata: Json
    created_at: str | None
    parent_checkpoint: CheckpointRef | None
    tasks: list[ThreadTask]
    interrupts: list[Interrupt]
    checkpoint_id: str | None
    thread_id: str
    run_id: str | None
    step: int
    source: CheckpointSource | None
    create_time: str | None


Checkpoint: TypeAlias = ThreadState


class StreamPart(NamedTuple):
    """One event of a run's stream.

    `event` is `metadata`, `values`, `updates`, `messages`, `custom`, `error` or `end`; `seq`
    is its position in the run's stream (1 for the first), usable as `join_stream`'s
    `after_seq` to resume. `seq` grows with every part but may skip numbers: several message
    chunks merged into one part for a reader that fell behind, or a run resumed after a
    server restart.
    """

    event: str
    data: Any
    seq: int


class ThreadStreamPart(NamedTuple):
    """One event of a thread's watch stream.

    `event` is `run_started` or `run_ended`, with the `Run` as `data`, or the kind of one of
    the runs' events (`metadata`, `values`, ..., `end`) with that event's data. `seq` is its
    position in the thread's stream, usable as `watch`'s `after_seq` to resume; `run_id` names
    the run and `run_seq` is the event's `seq` in the run's own stream (0 for `run_started`
    and `run_ended`).
    """

    event: str
    data: Any
    seq: int
    run_id: str
    run_seq: int


class RunResult(NamedTuple):
    """A finished run together with the values at its own last checkpoint."""

    run: Run
    values: Json
