"""A LangGraph thread's state as `GraphSnapshot`s: the graph's `aget_state` and
`aget_state_history` through Turnstile's saver, with values as JSON.

Reads use the graph as a run gets it (a factory is called with access `threads.read`) and a
saver over the store's LangGraph checkpoints with a channel cache of their own, apart from the
runs' (the API's reads then never touch what a run's saver holds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from turnstile_server.runtime.langgraph.messages import to_json
from turnstile_server.runtime.langgraph.runtime import with_saver
from turnstile_server.runtime.snapshot import (
    CheckpointRef,
    GraphSnapshot,
    PendingInterrupt,
    TaskView,
)
from turnstile_server.store.langgraph_checkpoints import LangGraphCheckpoints

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.types import StateSnapshot

    from turnstile_server.runtime.langgraph.runtime import LangGraphGraph


def _read_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


async def snapshot(
    graph: LangGraphGraph,
    checkpoints: LangGraphCheckpoints,
    thread_id: str,
    checkpoint_id: str | None = None,
    *,
    graph_id: str,
) -> GraphSnapshot | None:
    """The thread's state at `checkpoint_id` (its latest without one); None if it has none.
    GraphUnavailable if the graph's factory fails (so for `history` and `run_values`)."""
    config = _read_config(thread_id, checkpoint_id)
    async with graph.readable(dict(config), graph_id) as compiled:
        bound = with_saver(compiled, graph.shared.reader(checkpoints))
        state = await bound.aget_state(config)
    if not state.config or not state.config.get("configurable", {}).get("checkpoint_id"):
        return None
    return graph_snapshot(state)


async def history(
    graph: LangGraphGraph,
    checkpoints: LangGraphCheckpoints,
    thread_id: str,
    *,
    limit: int,
    before: str | None,
    graph_id: str,
) -> tuple[list[GraphSnapshot], str | None]:
    """The thread's checkpoints newest first, at most `limit` of them, older than `before`;
    and the checkpoint id the next page goes on before (None on the last page)."""
    config = _read_config(thread_id)
    found: list[GraphSnapshot] = []
    more = False
    async with graph.readable(dict(config), graph_id) as compiled:
        bound = with_saver(compiled, graph.shared.reader(checkpoints))
        older = _read_config(thread_id, before) if before else None
        async for state in bound.aget_state_history(config, before=older, limit=limit + 1):
            if len(found) == limit:
                more = True
                break
            found.append(graph_snapshot(state))
    return found, (found[-1].checkpoint.checkpoint_id if more and found[-1].checkpoint else None)


async def run_values(
    graph: LangGraphGraph,
    checkpoints: LangGraphCheckpoints,
    thread_id: str,
    run_id: str,
    *,
    graph_id: str,
) -> dict[str, Any]:
    """The values at the run's own last checkpoint (empty if it wrote none): those the run
    left when it ended by itself in this process (`last_put`), else read back."""
    kept, values = graph.shared.ended.take(run_id)
    if kept:
        return _values(values)
    newest = await checkpoints.list(
        thread_id, "", metadata={"run_id": run_id}, before=None, limit=1, known={}
    )
    if not newest:
        return {}
    found = await snapshot(
        graph, checkpoints, thread_id, newest[0].frame.checkpoint_id, graph_id=graph_id
    )
    return found.values if found is not None else {}


def graph_snapshot(state: StateSnapshot) -> GraphSnapshot:
    """A LangGraph `StateSnapshot` as plain values, as langgraph-api shows it."""
    metadata = to_json(dict(state.metadata or {}))
    return GraphSnapshot(
        values=_values(state.values),
        checkpoint=_ref(state.config),
        parent_checkpoint=_ref(state.parent_config),
        next=tuple(state.next),
        tasks=tuple(
            TaskView(
                id=task.id,
                name=task.name,
                interrupts=tuple(
                    PendingInterrupt(str(i.id), to_json(i.value)) for i in task.interrupts
                ),
                error=None if task.error is None else _error(task.error),
                checkpoint=_ref(task.state, subgraph=True)
                if isinstance(task.state, dict)
                else None,
                result=to_json(task.result) if isinstance(task.result, dict) else None,
            )
            for task in state.tasks
        ),
        metadata=metadata,
        created_at=state.created_at,
        run_id=str(metadata.get("run_id") or ""),
        step=int(metadata.get("step") or 0),
    )


def _values(values: Any) -> dict[str, Any]:
    converted = to_json(values)
    return converted if isinstance(converted, dict) else {"__root__": converted}


def _error(error: Any) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


def _ref(config: Any, *, subgraph: bool = False) -> CheckpointRef | None:
    configurable = (config or {}).get("configurable") or {}
    thread_id = configurable.get("thread_id")
    checkpoint_id = configurable.get("checkpoint_id")
    if not thread_id or not (checkpoint_id or subgraph):
        return None
    return CheckpointRef(
        str(thread_id), str(checkpoint_id or ""), str(configurable.get("checkpoint_ns") or "")
    )
