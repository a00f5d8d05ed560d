"""A thread's state as its graph's runtime shows it, for GetThreadState, GetThreadHistory,
GetThread and the values a run ends with.

A thread belongs to the runtime of its newest run's graph. A native thread's state is the
fold of its checkpoint records (`store.checkpoints`); a LangGraph thread's is what the graph's
`aget_state`/`aget_state_history` make of its LangGraph checkpoints (`runtime/langgraph/
state.py`): values, `next`, `tasks` with their interrupts, errors and subgraph checkpoints,
the checkpoint and its parent, and LangGraph's metadata (`step`, `source`, `run_id`). A
LangGraph thread whose graph's factory fails cannot be read: FAILED_PRECONDITION
GRAPH_UNAVAILABLE (`LangGraphGraph.readable`).
"""

from __future__ import annotations

import datetime
from typing import Any

from turnstile_server.graph import GraphRegistry
from turnstile_server.runtime.langgraph.runtime import LangGraphGraph
from turnstile_server.runtime.snapshot import CheckpointRef, GraphSnapshot
from turnstile_server.store import CheckpointRecord, RunRecord, Store


class ThreadStates:
    """Reads threads' states through their runtimes."""

    __slots__ = ("_graphs", "_store")

    def __init__(self, store: Store, graphs: GraphRegistry) -> None:
        self._store = store
        self._graphs = graphs

    def langgraph_graph(self, graph_id: str) -> LangGraphGraph | None:
        """The registered LangGraph graph of that id, None for a native (or unknown) one."""
        if graph_id not in self._graphs:
            return None
        prepared = self._graphs.prepared(graph_id)
        return prepared if isinstance(prepared, LangGraphGraph) else None

    def _id_of(self, graph: LangGraphGraph) -> str:
        """The id `graph` is registered under (for its errors)."""
        return next((i for i in self._graphs.ids() if self._graphs.prepared(i) is graph), "")

    async def langgraph_of(self, thread_id: str) -> LangGraphGraph | None:
        """The LangGraph graph whose state the thread holds (its newest run's), or None when
        the thread is native (or has no run)."""
        runs, _ = await self._store.runs.list(thread_id, status=None, limit=1, before=None)
        return self.langgraph_graph(runs[0].graph_id) if runs else None

    async def latest(self, thread_id: str, checkpoint_id: str | None = None) -> GraphSnapshot:
        """The thread's state at a LangGraph checkpoint (its latest without an id)."""
        graph = await self.langgraph_of(thread_id)
        if graph is None:
            state, record = await self._store.checkpoints.state(thread_id)
            return native_snapshot(record, state.values, thread_id)
        from turnstile_server.runtime.langgraph import state as lg_state

        found = await lg_state.snapshot(
            graph, self._store.langgraph, thread_id, checkpoint_id, graph_id=self._id_of(graph)
        )
        return found if found is not None else GraphSnapshot({}, None)

    async def langgraph_history(
        self, graph: LangGraphGraph, thread_id: str, *, limit: int, before: str | None
    ) -> tuple[list[GraphSnapshot], str | None]:
        """A page of a LangGraph thread's history, newest first, and the next page's cursor."""
        from turnstile_server.runtime.langgraph import state as lg_state

        return await lg_state.history(
            graph,
            self._store.langgraph,
            thread_id,
            limit=limit,
            before=before,
            graph_id=self._id_of(graph),
        )

    async def native_history(
        self, thread_id: str, *, limit: int, before: int | None
    ) -> tuple[list[GraphSnapshot], int | None]:
        """A page of a native thread's history, newest first, and the next page's cursor."""
        page, cursor = await self._store.checkpoints.history(thread_id, limit=limit, before=before)
        return [native_snapshot(record, values, thread_id) for record, values in page], cursor

    async def run_values(self, run: RunRecord) -> dict[str, Any] | None:
        """The values at a LangGraph run's own last checkpoint; None for a native run."""
        graph = self.langgraph_graph(run.graph_id)
        if graph is None:
            return None
        from turnstile_server.runtime.langgraph import state as lg_state

        return await lg_state.run_values(
            graph, self._store.langgraph, run.thread_id, run.run_id, graph_id=run.graph_id
        )


def native_snapshot(
    record: CheckpointRecord | None, values: dict[str, Any], thread_id: str
) -> GraphSnapshot:
    """A native checkpoint and the values at it as a snapshot (no `next`, no tasks)."""
    if record is None:
        return GraphSnapshot(values, None)
    created = datetime.datetime.fromtimestamp(record.create_time / 1e6, datetime.UTC)
    return GraphSnapshot(
        values,
        CheckpointRef(thread_id, record.checkpoint_id),
        metadata={"step": record.step, "source": record.source, "run_id": record.run_id},
        created_at=created.isoformat(),
        run_id=record.run_id,
        step=record.step,
    )
