"""The SDK's result shapes: plain dicts (TypedDicts) keyed by the proto field names.

Timestamps are ISO-8601 strings (`None` when unset); enums are lower-case strings without
their prefix. JSON values travel as `google.protobuf.Struct`, whose only number type is a
double: every number comes back as a `float` (`1` is returned as `1.0`), and integers beyond
2**53 lose precision.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, TypeAlias, TypedDict

MultitaskStrategy: TypeAlias = Literal["reject", "interrupt", "rollback", "enqueue"]
RunStatus: TypeAlias = Literal["pending", "running", "success", "error", "timeout", "interrupted"]
ThreadStatus: TypeAlias = Literal["idle", "busy", "interrupted", "error"]
StreamMode: TypeAlias = Literal["values", "updates", "messages", "custom"]
CancelAction: TypeAlias = Literal["interrupt", "rollback"]
IfNotExists: TypeAlias = Literal["reject", "create"]
IfExists: TypeAlias = Literal["raise", "do_nothing"]
CheckpointSource: TypeAlias = Literal["input", "step"]
OnDisconnect: TypeAlias = Literal["continue", "cancel"]
Durability: TypeAlias = Literal["sync", "async", "exit"]

Json: TypeAlias = dict[str, Any]
"""A JSON object: input, values, metadata, config."""


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


class Thread(TypedDict):
    """A conversation thread with its current state."""

    thread_id: str
    metadata: Json
    status: ThreadStatus
    values: Json
    create_time: str | None
    update_time: str | None


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
    """A checkpoint: a saved state of a thread.

    `checkpoint_id`, `run_id`, `source` and `create_time` are `None` for the state of a thread
    that has no checkpoint yet; `values` is then `{}`.
    """

    values: Json
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
