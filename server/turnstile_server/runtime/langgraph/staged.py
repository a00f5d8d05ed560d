"""An UpdateThreadState's writes staged in memory, so that the store lands them in one
transaction with the check that no run is inflight on the thread.

`graph.aupdate_state` writes through a saver as it goes (a checkpoint, its blobs, the task's
writes against the checkpoint it updates), and the thread's state is read back afterwards to
learn what it now waits for. Written straight to the store, a run admitted while that happens
would start on half an update, or the update would land under a running run. `Staged` holds
every write and serves reads as if they had landed (the staged checkpoints over the store's),
so the whole update, and what the thread waits for after it, is one `StagedUpdate` the store
applies in one transaction (`Threads.apply_update`), refused if a run is inflight then or the
thread's newest checkpoint is no longer the one the update was computed on (`base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from turnstile_server.store.langgraph_checkpoints import (
    BlobRecord,
    Chain,
    CheckpointFrame,
    StagedUpdate,
    StoredCheckpoint,
    WriteRecord,
)
from turnstile_server.store.langgraph_checkpoints import LangGraphCheckpoints as Checkpoints

_Scope = tuple[str, str]
"""(thread id, checkpoint namespace)."""


class Staged:
    """`LangGraphCheckpoints` that keeps writes in memory over the store's checkpoints."""

    def __init__(self, store: Checkpoints, thread_id: str) -> None:
        self._store = store
        self._thread_id = thread_id
        self._frames: dict[tuple[str, str, str], CheckpointFrame] = {}
        self._blobs: dict[tuple[str, str, str, str], BlobRecord] = {}
        self._writes: dict[tuple[str, str, str], list[tuple[str, WriteRecord]]] = {}
        self._puts: list[tuple[CheckpointFrame, list[BlobRecord]]] = []
        self._put_writes: list[tuple[str, str, str, list[WriteRecord]]] = []
        self._read: list[CheckpointFrame] = []  # the store's checkpoints read, newest last
        self._base: str | None = None
        self._based = False

    def update(self, interrupts: list[dict[str, Any]] | None) -> StagedUpdate:
        """Everything staged, for the store to apply in one transaction."""
        if not self._based:
            raise RuntimeError("the thread's newest checkpoint was never read")
        return StagedUpdate(
            thread_id=self._thread_id,
            base=self._base,
            puts=list(self._puts),
            writes=list(self._put_writes),
            interrupts=interrupts,
        )

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
        """Stages the `earlier` checkpoints, then a checkpoint and its blobs, and `writes`
        against its parent."""
        for earlier_frame, earlier_blobs in earlier:
            await self.put(earlier_frame, earlier_blobs)
        self._check_thread(frame.thread_id)
        ns = frame.checkpoint_ns
        if writes:
            if frame.parent_id is None:
                raise ValueError("a checkpoint without a parent has no writes to store with it")
            await self.put_writes(frame.thread_id, ns, frame.parent_id, frame.run_id, writes)
        self._frames[(frame.thread_id, ns, frame.checkpoint_id)] = frame
        for blob in blobs:
            self._blobs.setdefault((frame.thread_id, ns, blob.channel, blob.version), blob)
        self._puts.append((frame, list(blobs)))

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
        """Stages a task's writes against a checkpoint (staged or stored)."""
        self._check_thread(thread_id)
        staged = self._writes.setdefault((thread_id, checkpoint_ns, checkpoint_id), [])
        staged.extend((run_id, write) for write in writes)
        self._put_writes.append((checkpoint_ns, checkpoint_id, run_id, list(writes)))

    async def get(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        known: Mapping[str, str],
    ) -> StoredCheckpoint | None:
        """The staged checkpoint asked for (or the namespace's newest, which is staged once
        one is), else the store's, with the writes staged against it."""
        scope = (thread_id, checkpoint_ns)
        key = self._staged_key(scope, checkpoint_id)
        if key is not None:
            return await self._stored_staged(self._frames[key], known)
        stored = await self._store.get(thread_id, checkpoint_ns, checkpoint_id, known)
        if checkpoint_id is None and checkpoint_ns == "" and not self._based:
            self._base = None if stored is None else stored.frame.checkpoint_id
            self._based = True
        if stored is None:
            return None
        self._read.append(stored.frame)
        return self._with_staged_writes(stored)

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
        """The staged checkpoints that match (they are the newest), then the store's."""
        wanted = dict(metadata or {})
        staged = sorted(
            (
                frame
                for (thread, ns, cid), frame in self._frames.items()
                if thread_id in (None, thread)
                and checkpoint_ns in (None, ns)
                and checkpoint_id in (None, cid)
                and (before is None or cid < before)
                and all(frame.metadata.get(k, _ABSENT) == v for k, v in wanted.items())
            ),
            key=lambda frame: frame.checkpoint_id,
            reverse=True,
        )
        found = [await self._stored_staged(frame, known) for frame in staged[:limit]]
        if limit is not None and len(found) >= limit:
            return found
        rest = await self._store.list(
            thread_id,
            checkpoint_ns,
            checkpoint_id=checkpoint_id,
            metadata=metadata,
            before=before,
            limit=None if limit is None else limit - len(found),
            known=known,
        )
        self._read.extend(stored.frame for stored in rest)
        return [*found, *(self._with_staged_writes(stored) for stored in rest)]

    async def delete_thread(self, thread_id: str) -> None:
        """Refused: an update writes, it never deletes."""
        raise NotImplementedError("an update does not delete a thread")

    async def delete_for_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Refused: an update writes, it never deletes."""
        raise NotImplementedError("an update does not delete runs")

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Refused: an update writes one thread."""
        raise NotImplementedError("an update does not copy a thread")

    async def prune(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """Refused: an update writes, it never deletes."""
        raise NotImplementedError("an update does not prune")

    def _check_thread(self, thread_id: str) -> None:
        if thread_id != self._thread_id:
            raise ValueError(f"an update of thread {self._thread_id} wrote to {thread_id}")

    def _staged_key(self, scope: _Scope, checkpoint_id: str | None) -> tuple[str, str, str] | None:
        if checkpoint_id is not None:
            key = (*scope, checkpoint_id)
            return key if key in self._frames else None
        ids = [cid for (thread, ns, cid) in self._frames if (thread, ns) == scope]
        return (*scope, max(ids)) if ids else None

    def _with_staged_writes(self, stored: StoredCheckpoint) -> StoredCheckpoint:
        frame = stored.frame
        staged = self._writes.get((frame.thread_id, frame.checkpoint_ns, frame.checkpoint_id))
        if not staged:
            return stored
        return StoredCheckpoint(frame, _merged(stored.writes, staged), stored.blobs)

    async def _stored_staged(
        self, frame: CheckpointFrame, known: Mapping[str, str]
    ) -> StoredCheckpoint:
        """A staged checkpoint as the store would return it once landed."""
        staged = self._writes.get((frame.thread_id, frame.checkpoint_ns, frame.checkpoint_id))
        blobs: dict[str, Chain] = {}
        for channel, version in frame.versions.items():
            if known.get(channel) != version:
                blobs[channel] = await self._chain(frame, channel, version, known)
        return StoredCheckpoint(frame, _merged([], staged or []), blobs)

    async def _chain(
        self, frame: CheckpointFrame, channel: str, version: str, known: Mapping[str, str]
    ) -> Chain:
        """The channel's blobs from `version` back to a whole value or one the caller holds:
        the staged ones, then the store's (read through a stored checkpoint at that version)."""
        thread, ns = frame.thread_id, frame.checkpoint_ns
        chain: Chain = []
        current: str | None = version
        while current is not None and (thread, ns, channel, current) in self._blobs:
            blob = self._blobs[(thread, ns, channel, current)]
            chain.append(blob)
            current = blob.base if blob.kind == "append" else None
            if current is not None and known.get(channel) == current:
                return chain
        if current is None:
            return chain
        for read in reversed(self._read):
            if (read.thread_id, read.checkpoint_ns) == (thread, ns) and read.versions.get(
                channel
            ) == current:
                others = {c: v for c, v in read.versions.items() if c != channel}
                stored = await self._store.get(thread, ns, read.checkpoint_id, {**known, **others})
                if stored is not None:
                    return [*chain, *stored.blobs.get(channel, [])]
        raise LookupError(f"channel {channel}: version {current} is neither staged nor read")


_ABSENT = object()


def _merged(stored: list[WriteRecord], staged: list[tuple[str, WriteRecord]]) -> list[WriteRecord]:
    """A checkpoint's writes as the store keeps them once the staged ones landed: a regular
    write (idx >= 0) already there is kept, a special one replaced; in LangGraph's order."""
    writes = {(w.task_id, w.idx): w for w in stored}
    for _, write in staged:
        if write.idx < 0 or (write.task_id, write.idx) not in writes:
            writes[(write.task_id, write.idx)] = write
    return sorted(writes.values(), key=lambda w: (w.task_path, w.task_id, w.idx))
