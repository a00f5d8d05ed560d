"""A run's `RunHost` as a graph loop sees it: every call goes over the bridge to the runner's
host on the server loop, which alone touches the store, the event hub and gRPC.

What the graph side keeps is plain: the run's record and start (frozen records), a
`RunContext` of its own whose events go over the bridge, and the events' data, which is
validated and copied here (on the graph's thread) so the server side never reads an object the
graph may still change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from turnstile_server.runtime.context import RunContext
from turnstile_server.runtime.interface import RunHost, Step, Write
from turnstile_server.runtime.loop_bridge import LoopBridge
from turnstile_server.state import ThreadState, check_event_depth, json_copy
from turnstile_server.store import CheckpointRecord, LangGraphCheckpoints, RunRecord, Start
from turnstile_server.store.langgraph_checkpoints import (
    BlobRecord,
    CheckpointFrame,
    StoredCheckpoint,
    WriteRecord,
)


class RemoteHost:
    """The graph loop's `RunHost` for one run, forwarding to `host` on the server loop."""

    __slots__ = (
        "_bridge",
        "_host",
        "_modes",
        "_state",
        "_writes",
        "context",
        "langgraph",
        "max_state_bytes",
        "run",
        "start",
    )

    def __init__(self, host: RunHost, bridge: LoopBridge, state: ThreadState | None = None) -> None:
        """`state`, read on the server loop as the run starts, answers the first `state()`
        (then the graph side owns it: the server side keeps no reference to it)."""
        self._host = host
        self._bridge = bridge
        self._state = state
        self.run: RunRecord = host.run
        self.start: Start = host.start
        self.max_state_bytes = host.max_state_bytes
        self._modes = frozenset(self.run.stream_mode)
        self.context = RunContext(
            run_id=self.run.run_id,
            thread_id=self.run.thread_id,
            emit=self.emit,
            attempt=self.run.attempt,
            input=self.run.input,
            config=self.run.config,
        )
        self.langgraph = RemoteCheckpoints(host.langgraph, bridge)
        # Each write the graph side queued, and the server side's write once it is queued there.
        self._writes: dict[Write, list[Write]] = {}

    def wants(self, event: str) -> bool:
        return event in self._modes

    def emit(
        self, event: str, data: Any, *, checked: bool = False, mode: str | None = None
    ) -> None:
        if not checked:
            check_event_depth(event, data)
        if (mode or event) not in self._modes:
            return
        if not checked:  # the server side encodes it later: a copy the graph cannot change
            data = json_copy(data, f"{event} event")
        host = self._host
        self._bridge.post(lambda: host.emit(event, data, checked=checked, mode=mode))

    def awaiting_input(self, interrupts: Sequence[Mapping[str, Any]], next: Sequence[str]) -> None:
        copied, nodes = [dict(i) for i in interrupts], list(next)
        host = self._host
        self._bridge.post(lambda: host.awaiting_input(copied, nodes))

    async def state(self) -> ThreadState:
        if self._state is not None:
            state, self._state = self._state, None
            return state
        return await self._bridge.call(self._host.state)

    def write(self, steps: Sequence[Step]) -> Write:
        queued: Write = asyncio.get_running_loop().create_future()
        server: list[Write] = []
        host, listed = self._host, list(steps)
        self._writes[queued] = server
        bridge = self._bridge

        def submit() -> None:  # on the server loop
            try:
                server.append(host.write(listed))
            except Exception as exc:  # the store refused it at once: `landed` raises it
                failed: Write = bridge.server.create_future()
                failed.set_exception(exc)
                server.append(failed)

        bridge.post(submit)
        return queued

    async def landed(self, write: Write) -> list[CheckpointRecord]:
        server = self._writes.pop(write)
        host = self._host

        async def land() -> list[CheckpointRecord]:
            return await host.landed(server[0])

        records = await self._bridge.call(land)
        if not write.done():
            write.set_result(records)
        return records

    async def cancelled_for(self) -> str | None:
        return await self._bridge.call(self._host.cancelled_for)


class RemoteCheckpoints:
    """The run's `LangGraphCheckpoints` (`RunCheckpoints`) as the graph loop calls them."""

    __slots__ = ("_bridge", "_store")

    def __init__(self, store: LangGraphCheckpoints, bridge: LoopBridge) -> None:
        self._store = store
        self._bridge = bridge

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
        store, listed, parents = self._store, list(blobs), list(writes)
        before = [(f, list(b)) for f, b in earlier]
        await self._bridge.call(
            lambda: store.put(
                frame,
                listed,
                writes=parents,
                earlier=before,
                require_run=require_run,
                epoch=epoch,
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
        store, listed = self._store, list(writes)
        await self._bridge.call(
            lambda: store.put_writes(
                thread_id,
                checkpoint_ns,
                checkpoint_id,
                run_id,
                listed,
                require_run=require_run,
                epoch=epoch,
            )
        )

    async def get(
        self,
        thread_id: str,
        checkpoint_ns: str,
        checkpoint_id: str | None,
        known: Mapping[str, str],
    ) -> StoredCheckpoint | None:
        store, versions = self._store, dict(known)
        return await self._bridge.call(
            lambda: store.get(thread_id, checkpoint_ns, checkpoint_id, versions)
        )

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
        store, versions = self._store, dict(known)
        filters = None if metadata is None else dict(metadata)
        return await self._bridge.call(
            lambda: store.list(
                thread_id,
                checkpoint_ns,
                checkpoint_id=checkpoint_id,
                metadata=filters,
                before=before,
                limit=limit,
                known=versions,
            )
        )

    async def delete_thread(self, thread_id: str) -> None:
        store = self._store
        await self._bridge.call(lambda: store.delete_thread(thread_id))

    async def delete_for_runs(self, run_ids: Sequence[str]) -> set[str]:
        store, listed = self._store, list(run_ids)
        return await self._bridge.call(lambda: store.delete_for_runs(listed))

    async def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        store = self._store
        await self._bridge.call(lambda: store.copy_thread(source_thread_id, target_thread_id))

    async def prune(self, thread_ids: Sequence[str], *, keep_latest: bool) -> None:
        store, listed = self._store, list(thread_ids)
        await self._bridge.call(lambda: store.prune(listed, keep_latest=keep_latest))
