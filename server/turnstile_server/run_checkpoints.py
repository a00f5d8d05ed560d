"""The store's LangGraph checkpoints as one run may use them: its own rows, while it runs.

The runner lends this to a run's runtime as `RunHost.langgraph`. Every write names the run
(whatever the saver was told) and is refused by the store once the run's row is gone; the
runner `settle`s it when the run has unwound, which waits for the writes in flight and refuses
any later one, so nothing of a run lands after the store has finished or deleted it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from turnstile_server.store import LangGraphCheckpoints, RunRecord
from turnstile_server.store.langgraph_checkpoints import (
    BlobRecord,
    CheckpointFrame,
    StoredCheckpoint,
    WriteRecord,
)


class RunEnded(RuntimeError):
    """A write of a run that has unwound (a leftover background write of its graph)."""


class RunCheckpoints:
    """`LangGraphCheckpoints` for one run: writes of that run only, each tracked to its end."""

    __slots__ = ("_closed", "_run", "_store", "_writing")

    def __init__(self, store: LangGraphCheckpoints, run: RunRecord) -> None:
        self._store = store
        self._run = run
        self._writing: set[asyncio.Future[Any]] = set()
        self._closed = False

    async def put(
        self,
        frame: CheckpointFrame,
        blobs: Sequence[BlobRecord],
        *,
        writes: Sequence[WriteRecord] = (),
        earlier: Sequence[tuple[CheckpointFrame, Sequence[BlobRecord]]] = (),
        require_run: bool = True,
        epoch: int = 0,
    ) -> None:
        """Stores checkpoints of the run and its parent's writes, as the run's (see
        `LangGraphCheckpoints.put`, `require_run` on), fenced by its attempt's epoch (whatever
        the caller passed)."""
        run_id = self._run.run_id
        owned = replace(frame, run_id=run_id)
        before = [(replace(f, run_id=run_id), b) for f, b in earlier]
        epoch = self._run.epoch
        await self._write(
            lambda: self._store.put(
                owned, blobs, writes=writes, earlier=before, require_run=True, epoch=epoch
            )
        )

    async def put_writes(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str,
        run_id: str,
        writes: Sequence[WriteRecord],
        *,
        require_run: bool = True,
        epoch: int = 0,
    ) -> None:
        """Stores a task's writes, as the run's, fenced by its attempt's epoch (see
        `LangGraphCheckpoints.put_writes`)."""
        run, fence = self._run.run_id, self._run.epoch
        await self._write(
            lambda: self._store.put_writes(
                thread_id, checkpoint_ns, checkpoint_id, run, writes, require_run=True, epoch=fence
            )
        )

    async def get(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        known: Mapping[str, str],
    ) -> StoredCheckpoint | None:
        """Reads a checkpoint (see `LangGraphCheckpoints.get`)."""
        return await self._store.get(thread_id, checkpoint_ns, checkpoint_id, known)

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
        """Lists checkpoints (see `LangGraphCheckpoints.list`)."""
        return await self._store.list(
            thread_id,
            checkpoint_ns,
            checkpoint_id=checkpoint_id,
            metadata=metadata,
            before=before,
            limit=limit,
            known=known,
        )

    async def delete_thread(self, thread_id: str) -> None:
        """Refused: a run deletes no thread (DeleteThread does)."""
        raise RunEnded("a run cannot delete a thread's checkpoints")

    async def delete_for_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Refused: runs are deleted by the store (rollback)."""
        raise RunEnded("a run cannot delete runs' checkpoints")

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Refused: a run writes only its own thread."""
        raise RunEnded("a run cannot copy a thread")

    async def prune(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """Refused: a run deletes no checkpoints."""
        raise RunEnded("a run cannot prune checkpoints")

    async def settle(self) -> None:
        """Refuses every later write and waits for those in flight (if cancelled meanwhile,
        still waits, then re-raises), so none lands after the run is finished."""
        self._closed = True
        cancelled = False
        while self._writing:
            try:
                await asyncio.wait(set(self._writing))
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._writing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller cancelled meanwhile no longer awaits it

    async def _write(self, start: Any) -> None:
        if self._closed:
            raise RunEnded(f"run {self._run.run_id} has ended: its writes are refused")
        coro: Coroutine[Any, Any, None] = start()
        task = asyncio.ensure_future(coro)
        self._writing.add(task)
        task.add_done_callback(self._done)
        # The write goes on if the caller is cancelled; `settle` waits for it.
        await asyncio.shield(task)
