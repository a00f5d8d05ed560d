"""A thread's state on the wire: `runtime/snapshot.GraphSnapshot` as a `Checkpoint` message.

`GetThreadState` and `GetThreadHistory` answer `Checkpoint`s with LangGraph's fields (`next`,
`tasks`, `interrupts`, `parent_checkpoint`, `metadata`); the runtimes describe a state as a
`GraphSnapshot`, and a native thread's comes from its checkpoint records (`native_snapshot`).
"""

from __future__ import annotations

import datetime
from typing import Any

from google.protobuf import timestamp_pb2

from turnstile.v1 import thread_pb2
from turnstile_server.api import wire
from turnstile_server.runtime.snapshot import (
    CheckpointRef,
    GraphSnapshot,
    PendingInterrupt,
    TaskView,
)
from turnstile_server.store import CheckpointRecord

CHECKPOINT_SOURCES = {
    "input": thread_pb2.CHECKPOINT_SOURCE_INPUT,
    "step": thread_pb2.CHECKPOINT_SOURCE_STEP,
    "loop": thread_pb2.CHECKPOINT_SOURCE_STEP,  # LangGraph's name for a step's checkpoint
    "update": thread_pb2.CHECKPOINT_SOURCE_UPDATE,
    "fork": thread_pb2.CHECKPOINT_SOURCE_FORK,
}


def native_snapshot(
    record: CheckpointRecord | None,
    values: dict[str, Any],
    parent: CheckpointRecord | None,
    thread_id: str,
) -> GraphSnapshot:
    """A native thread's state at `record` (None: a thread without checkpoints), whose values
    are `values` and whose previous checkpoint is `parent`. A native graph's state has no
    `next` and no tasks: it runs to its end or is cancelled."""
    if record is None:
        return GraphSnapshot(values=values, checkpoint=None)
    return GraphSnapshot(
        values=values,
        checkpoint=CheckpointRef(thread_id, record.checkpoint_id),
        parent_checkpoint=CheckpointRef(thread_id, parent.checkpoint_id) if parent else None,
        metadata={"source": record.source, "step": record.step, "run_id": record.run_id},
        created_at=_iso(record.create_time),
        run_id=record.run_id,
        step=record.step,
    )


def checkpoint_message(
    snapshot: GraphSnapshot, thread_id: str, *, values: bool = True
) -> thread_pb2.Checkpoint:
    """The wire form of a snapshot; without `values` the caller sets `values` (or
    `values_json`) itself, from a state it can encode faster."""
    ref = snapshot.checkpoint
    message = thread_pb2.Checkpoint(
        checkpoint_id=ref.checkpoint_id if ref else "",
        thread_id=ref.thread_id if ref else thread_id,
        checkpoint_ns=ref.checkpoint_ns if ref else "",
        next=list(snapshot.next),
        tasks=[_task(task) for task in snapshot.tasks],
        interrupts=[_interrupt(i, task.id) for task in snapshot.tasks for i in task.interrupts],
    )
    if values:
        message.values.CopyFrom(wire.to_struct(snapshot.values, state=True))
    if ref is None:
        return message
    message.run_id = snapshot.run_id or str(snapshot.metadata.get("run_id") or "")
    message.step = snapshot.step
    source = snapshot.metadata.get("source")
    if isinstance(source, str) and source in CHECKPOINT_SOURCES:
        message.source = CHECKPOINT_SOURCES[source]
    if snapshot.metadata:
        message.metadata.CopyFrom(wire.to_struct(snapshot.metadata))
    if snapshot.parent_checkpoint is not None:
        message.parent_checkpoint.CopyFrom(_ref(snapshot.parent_checkpoint))
    stamp = _timestamp(snapshot.created_at)
    if stamp is not None:
        message.create_time.CopyFrom(stamp)
    return message


def _ref(ref: CheckpointRef) -> thread_pb2.CheckpointRef:
    return thread_pb2.CheckpointRef(
        thread_id=ref.thread_id, checkpoint_ns=ref.checkpoint_ns, checkpoint_id=ref.checkpoint_id
    )


def _interrupt(interrupt: PendingInterrupt, task_id: str) -> thread_pb2.Interrupt:
    return thread_pb2.Interrupt(
        id=interrupt.id, value=wire.to_value(interrupt.value), task_id=task_id
    )


def _task(task: TaskView) -> thread_pb2.ThreadTask:
    message = thread_pb2.ThreadTask(
        id=task.id,
        name=task.name,
        interrupts=[_interrupt(i, task.id) for i in task.interrupts],
        error=task.error or "",
    )
    if task.checkpoint is not None:
        message.checkpoint.CopyFrom(_ref(task.checkpoint))
    if task.result is not None:
        message.result.CopyFrom(wire.to_struct(task.result))
    return message


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _iso(micros: int) -> str:
    """Microseconds since the epoch as ISO 8601, exactly."""
    return (_EPOCH + datetime.timedelta(microseconds=micros)).isoformat()


def _timestamp(iso: str | None) -> timestamp_pb2.Timestamp | None:
    """LangGraph's checkpoint `ts` (ISO 8601) as a Timestamp; None if absent or unreadable."""
    if not iso:
        return None
    try:
        moment = datetime.datetime.fromisoformat(iso)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
