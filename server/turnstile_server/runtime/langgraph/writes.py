"""Pending writes held until their superstep is checkpointed, so a cancelled step leaves none.

LangGraph stores each finished task's writes against the checkpoint its superstep started
from (`put_writes`), so that a resumed graph reuses them instead of running the task again.
For a run cancelled mid-step that would keep half a superstep: the next run, resuming, would
take the finished tasks' writes and run only the others. Turnstile's rule is that the step in
flight is discarded, so the writes against a namespace's newest checkpoint are held here and
written with that namespace's next checkpoint, in its transaction (the step completed: one
transaction per superstep, not one per task and one for the checkpoint), or when the run
ends by itself (an error, an `interrupt()`: LangGraph's state then shows them). A cancelled
run `discard`s what it holds. A crash loses them as well: the run resumes from its last
committed checkpoint and runs that superstep again whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from turnstile_server.store.langgraph_checkpoints import (
    BlobRecord,
    CheckpointFrame,
    LangGraphCheckpoints,
    StoredCheckpoint,
    WriteRecord,
)

_Held = tuple[str, str, str, str, list[WriteRecord]]
"""(thread, namespace, checkpoint id, run id, writes) of one `put_writes`."""


class HeldWrites:
    """`LangGraphCheckpoints` over another that holds pending writes until their step lands."""

    def __init__(self, store: LangGraphCheckpoints) -> None:
        self._store = store
        self._held: list[_Held] = []
        self._inputs: list[tuple[CheckpointFrame, list[BlobRecord]]] = []
        self.hold_input = False
        """Set by the runtime for a run whose input LangGraph checkpoints (a plain input,
        `sync` or `async` durability): its root `input` checkpoint is then held, and written
        in the transaction of the checkpoint that follows it (START's superstep, which applies
        the input), so the two cost one write. A cancellation waits for START's checkpoint
        (`execution.execute`); a crash between the two loses nothing the resumed attempt does
        not apply again (the run then has no checkpoint: its input is applied then)."""

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
        """Writes the checkpoint, with a held input checkpoint it follows (`hold_input`) and
        the writes held against its parent (its step is complete), in one transaction (the
        run's `RunCheckpoints` below present its attempt's epoch); writes of another run held
        against the parent land first, on their own."""

        def parents(h: _Held) -> bool:
            return (
                frame.parent_id is not None
                and h[0] == frame.thread_id
                and h[1] == frame.checkpoint_ns
                and h[2] == frame.parent_id
            )

        if (
            self.hold_input
            and not frame.checkpoint_ns
            and frame.metadata.get("source") == "input"
            and not self._inputs
        ):
            self._inputs.append((frame, list(blobs)))
            return
        before: list[tuple[CheckpointFrame, Sequence[BlobRecord]]] = list(earlier)
        if self._inputs:
            held = self._inputs[-1][0]
            if (held.thread_id, held.checkpoint_ns, held.checkpoint_id) == (
                frame.thread_id,
                frame.checkpoint_ns,
                frame.parent_id,
            ):
                before, self._inputs = [*self._inputs, *before], []
            else:
                await self.flush_inputs()
        await self._flush(lambda h: parents(h) and h[3] != frame.run_id)
        taken = [h for h in self._held if parents(h)]
        self._held = [h for h in self._held if not parents(h)]
        step = [write for h in taken for write in h[4]]
        await self._store.put(
            frame,
            blobs,
            writes=[*step, *writes],
            earlier=before,
            require_run=require_run,
        )

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
        """Holds a task's writes (they land with the step's checkpoint or the run's end)."""
        self._held.append((thread_id, checkpoint_ns, checkpoint_id, run_id, list(writes)))

    async def flush(self) -> None:
        """Writes everything held, in the order it came (the run ended by itself)."""
        await self.flush_inputs()
        await self._flush(lambda h: True)

    async def flush_inputs(self) -> None:
        """Writes a held input checkpoint (a cancelled run's too: its input stays)."""
        inputs, self._inputs = self._inputs, []
        for frame, blobs in inputs:
            await self._store.put(frame, blobs)

    def discard(self) -> int:
        """Forgets what is held (the run was cancelled: its steps in flight are discarded);
        returns how many writes that was."""
        count = sum(len(h[4]) for h in self._held)
        self._held.clear()
        return count

    async def _flush(self, matches: Callable[[_Held], bool]) -> None:
        taken = [h for h in self._held if matches(h)]
        if not taken:
            return
        self._held = [h for h in self._held if not matches(h)]
        for thread_id, ns, checkpoint_id, run_id, writes in taken:
            await self._store.put_writes(thread_id, ns, checkpoint_id, run_id, writes)

    async def get(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        known: Mapping[str, str],
    ) -> StoredCheckpoint | None:
        """Reads through (LangGraph keeps the run's own pending writes in memory)."""
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
        """Reads through."""
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
        """Passes through (the run's store refuses it)."""
        await self._store.delete_thread(thread_id)

    async def delete_for_runs(self, run_ids: Sequence[str]) -> set[str]:
        """Passes through (the run's store refuses it)."""
        return await self._store.delete_for_runs(run_ids)

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Passes through (the run's store refuses it)."""
        await self._store.copy_thread(source_thread_id, target_thread_id)

    async def prune(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        """Passes through (the run's store refuses it)."""
        await self._store.prune(thread_ids, keep_latest=keep_latest)
