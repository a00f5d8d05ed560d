"""LangGraph's checkpoints as the storage interface keeps them: rows of bytes, no LangGraph types.

A LangGraph checkpoint is stored as a frame (the checkpoint without its channel values), one blob
per channel version it introduced, and the pending writes of its tasks. A blob is either a whole
value (`full`), no value (`empty`), or the items appended to a list since another version of the
same channel (`append`, naming that version as its `base`): a list channel that only grew is
stored as its new tail, so a step writes what it changed, not the whole list again.

Every row carries the `run_id` that wrote it, so a rolled-back run's rows can all be deleted:
a backend deletes them in the transaction that deletes the run (rollback), and a thread's in
the one that deletes the thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

BlobKind = Literal["full", "append", "empty"]


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """One stored version of one channel's value."""

    channel: str
    version: str
    kind: BlobKind
    type: str
    data: bytes
    base: str | None = None
    """For `append`: the version of the same channel this blob's items follow."""


@dataclass(frozen=True, slots=True)
class CheckpointFrame:
    """A checkpoint's own row: its serialized frame, channel versions and metadata."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_id: str | None
    run_id: str
    type: str
    frame: bytes
    versions: Mapping[str, str]
    """Channel name -> the version (as text) whose blob holds the channel's value."""
    metadata: Mapping[str, Any]
    """JSON-compatible; `alist`'s filters compare against it."""


@dataclass(frozen=True, slots=True)
class WriteRecord:
    """One pending write of a task, against a checkpoint."""

    task_id: str
    idx: int
    channel: str
    type: str
    data: bytes
    task_path: str = ""


Chain = list[BlobRecord]
"""A channel version's blobs, newest first: ends at a `full` or `empty` blob, or at an `append`
whose base the caller already holds (it was named in `known`, or returned earlier in the call)."""


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint read back: its frame, pending writes and the blobs of its channels."""

    frame: CheckpointFrame
    writes: list[WriteRecord]
    """In LangGraph's order: by task path, task id, index."""
    blobs: dict[str, Chain] = field(default_factory=dict)
    """Channel -> chain, for the channels whose version the caller did not already hold."""


@dataclass(frozen=True, slots=True)
class StagedUpdate:
    """An UpdateThreadState's writes, to be applied in one transaction (`Threads.apply_update`)."""

    thread_id: str
    base: str | None
    """The thread's newest root checkpoint when the update read it (None: it had none): the
    update applies only while it still is."""
    puts: list[tuple[CheckpointFrame, list[BlobRecord]]]
    """Checkpoints with the blobs of the channel versions they introduced, in order."""
    writes: list[tuple[str, str, str, list[WriteRecord]]]
    """(namespace, checkpoint id, run id, writes) of each task's writes, in order."""
    interrupts: list[dict[str, Any]] | None
    """What the thread waits for after it (as `ThreadRecord.interrupts`; None: nothing)."""


class BaseMoved(Exception):
    """The thread's newest checkpoint is not an update's `base` any more (a run wrote since
    the update read it): nothing was applied; computing the update again may succeed."""


class LangGraphCheckpoints(Protocol):
    """The storage interface's part for LangGraph checkpoints (every backend implements it).

    Writes go through the backend's writer under its transaction discipline: each call is one
    transaction, and a write once begun is applied even if its caller is cancelled.
    """

    async def put(
        self,
        frame: CheckpointFrame,
        blobs: Sequence[BlobRecord],
        *,
        writes: Sequence[WriteRecord] = (),
        earlier: Sequence[tuple[CheckpointFrame, Sequence[BlobRecord]]] = (),
        require_run: bool = False,
        epoch: int = 0,
    ) -> None:
        """Stores a checkpoint and the blobs of the channel versions it introduced (a blob
        already stored under the same channel and version is kept), and `writes`: pending
        writes of the run `frame.run_id` against the frame's parent (the superstep this
        checkpoint completes), stored as `put_writes` stores them, in the same transaction;
        `earlier` checkpoints of the same run with their blobs are stored first, in it too.

        With `require_run` (a run's own writes), ThreadNotFound and nothing written unless the
        run `frame.run_id` of `frame.thread_id` still exists, checked in the same transaction:
        a deleted or rolled-back run's writes never land, even into a thread created again.
        With `epoch` (the attempt's fencing token), AttemptFenced and nothing written unless
        that attempt still holds the run (a backend shared by replicas checks it)."""
        ...

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        run_id: str,
        writes: Sequence[WriteRecord],
        *,
        require_run: bool = False,
        epoch: int = 0,
    ) -> None:
        """Stores a task's writes against a checkpoint: a regular write (idx >= 0) already
        stored is kept, a special one (idx < 0: error, interrupt, ...) is replaced.
        `require_run` and `epoch` as for `put`."""
        ...

    async def get(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        known: Mapping[str, str],
    ) -> StoredCheckpoint | None:
        """The checkpoint (the newest of the namespace when `checkpoint_id` is None), with the
        chains of its channels except those at the version `known` names for them."""
        ...

    async def list(
        self,
        thread_id: str | None,
        checkpoint_ns: str | None,
        *,
        checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | None,
        before: str | None,
        limit: int | None,
        known: Mapping[str, str],
    ) -> list[StoredCheckpoint]:
        """Checkpoints newest first (by checkpoint id) whose metadata has every key of
        `metadata` with an equal value, with ids below `before` (or the one `checkpoint_id`),
        at most `limit` of them. A chain stops at a version returned earlier in the list or
        named in `known`."""
        ...

    async def delete_thread(self, thread_id: str) -> None:
        """Deletes every checkpoint, blob and write of a thread, in every namespace."""
        ...

    async def delete_for_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Deletes every checkpoint, blob and write the runs wrote (a blob another run's
        checkpoint still reads is kept for it); returns the threads it touched."""
        ...

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies a thread's checkpoints, blobs and writes, ids unchanged, to another thread."""
        ...

    async def prune(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """Keeps only each namespace's newest checkpoint (and what it reads), or nothing."""
        ...
