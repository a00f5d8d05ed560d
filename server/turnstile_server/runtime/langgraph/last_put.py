"""The root checkpoint a run's saver put last, with the writes put against it, kept in memory.

A run holds its thread alone while it executes (SPEC §3: never two runs at once; state
updates are refused while a run is inflight), so once its graph has returned, the thread's
latest root checkpoint is the one its saver put last, and its pending writes are those the
saver put after it. The state the run ends with (what it waits for, the values WaitRun and
JoinRun answer) is then read from here instead of from the database: the same tuple the
store would return, without the round trip. It is only ever the run's own saver that answers
from it, and only after the graph has returned (`TurnstileSaver.serve_last`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

ENDED_RUNS = 128
"""Ended runs whose last state `EndedValues` keeps until WaitRun or JoinRun takes it."""


class LastPut:
    """The last root checkpoint put and its pending writes, stored as the store stores them:
    a regular write (idx >= 0) already there is kept, a special one (idx < 0) is replaced."""

    __slots__ = ("_tuple", "_writes")

    def __init__(self) -> None:
        self._tuple: CheckpointTuple | None = None
        self._writes: dict[tuple[str, int], tuple[str, str, Any]] = {}

    def checkpointed(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        parent: RunnableConfig | None,
    ) -> None:
        """Remembers a root checkpoint just stored (it has no writes yet)."""
        self._tuple = CheckpointTuple(config, checkpoint, metadata, parent, [])
        self._writes = {}

    def wrote(
        self, checkpoint_id: str, task_id: str, writes: Sequence[tuple[str, Any]], task_path: str
    ) -> None:
        """Remembers a task's writes against the checkpoint, if it is the one remembered."""
        if self.checkpoint_id != checkpoint_id:
            return
        for idx, (channel, value) in enumerate(writes):
            key = (task_id, WRITES_IDX_MAP.get(channel, idx))
            if key[1] >= 0 and key in self._writes:
                continue
            self._writes[key] = (task_path, channel, value)

    def forget(self) -> None:
        """Forgets it (a write failed: what is stored is no longer known)."""
        self._tuple = None
        self._writes = {}

    @property
    def checkpoint_id(self) -> str | None:
        """The remembered checkpoint's id."""
        return None if self._tuple is None else self._tuple.checkpoint["id"]

    def answer(self, checkpoint_id: str | None) -> CheckpointTuple | None:
        """The tuple for a read of the latest root checkpoint or of the remembered one's id
        (its writes in the store's order: task path, task id, index); None for any other."""
        if self._tuple is None or checkpoint_id not in (None, self.checkpoint_id):
            return None
        ordered = sorted(self._writes.items(), key=lambda kv: (kv[1][0], kv[0][0], kv[0][1]))
        pending = [(task_id, channel, value) for (task_id, _), (_, channel, value) in ordered]
        return self._tuple._replace(pending_writes=pending)


class EndedValues:
    """The values at the last checkpoint of recently ended runs, until one call takes them
    (bounded: an entry nobody takes gives way; the caller then reads the store).

    Runs keep on their graph loops, the API takes on its own: each method holds the lock."""

    def __init__(self, size: int = ENDED_RUNS) -> None:
        self._size = size
        self._values: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, run_id: str, values: Any) -> None:
        """Keeps a run's values (LangGraph's, not yet JSON)."""
        with self._lock:
            self._values[run_id] = values
            while len(self._values) > self._size:
                self._values.popitem(last=False)

    def take(self, run_id: str) -> tuple[bool, Any]:
        """(True, the run's values) once, or (False, None)."""
        with self._lock:
            if run_id in self._values:
                return True, self._values.pop(run_id)
        return False, None
