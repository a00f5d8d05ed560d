"""`UpdateThreadState` for LangGraph threads: `graph.aupdate_state` on Turnstile's saver.

The update is written as if `as_node` had returned `values`, through the graph's reducers, as
a new checkpoint after the thread's latest (or after `checkpoint_id`, forking the history),
with LangGraph's metadata `source: update`. It belongs to no run (a later rollback leaves it).
LangGraph computes it on a saver whose writes are staged (`staged.Staged`, with a channel
cache of its own, apart from the runs' savers), the thread's state is read back through it to
learn what the thread then waits for, and the store applies all of it in one transaction that
refuses it while a run is inflight (`Threads.apply_update`). If a run wrote to the thread
since the update read it, the update is computed again on the new state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from turnstile_server.errors import InvalidArgument, ThreadBusy
from turnstile_server.runtime.langgraph.messages import to_json
from turnstile_server.runtime.langgraph.runtime import with_saver
from turnstile_server.runtime.langgraph.staged import Staged
from turnstile_server.runtime.snapshot import CheckpointRef
from turnstile_server.store.langgraph_checkpoints import (
    BaseMoved,
    LangGraphCheckpoints,
    StagedUpdate,
)

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from turnstile_server.runtime.langgraph.runtime import LangGraphGraph

ATTEMPTS = 3
"""Computations of one update at most, when runs keep writing to the thread meanwhile."""


@dataclass(frozen=True, slots=True)
class Updated:
    """What an update wrote, and what the thread's latest checkpoint waits for after it
    (`interrupts` None: nothing; a list, possibly empty: the nodes in `next` wait)."""

    checkpoint: CheckpointRef
    next: list[str]
    interrupts: list[dict[str, Any]] | None


async def update_state(
    graph: LangGraphGraph,
    checkpoints: LangGraphCheckpoints,
    apply: Callable[[StagedUpdate], Awaitable[None]],
    thread_id: str,
    values: dict[str, Any] | None,
    *,
    as_node: str | None,
    checkpoint_id: str | None,
    graph_id: str,
    max_state_bytes: int | None = None,
) -> Updated:
    """Writes the update through `apply` (the store's `Threads.apply_update`); StateTooLarge
    when the thread's state would pass `max_state_bytes`, nothing written; InvalidArgument
    when LangGraph refuses it (an unknown node, an ambiguous writer, values the state does not
    take), ThreadBusy while a run is inflight (or when runs wrote to the thread under each of
    `ATTEMPTS` computations of it)."""
    for _ in range(ATTEMPTS):
        staged = Staged(checkpoints, thread_id)
        updated = await _compute(
            graph, staged, thread_id, values, as_node, checkpoint_id, graph_id, max_state_bytes
        )
        try:
            await apply(staged.update(updated.interrupts))
        except BaseMoved:
            continue  # a run wrote to the thread since it was read: compute it again
        return updated
    raise ThreadBusy(thread_id, [])


async def _compute(
    graph: LangGraphGraph,
    staged: Staged,
    thread_id: str,
    values: dict[str, Any] | None,
    as_node: str | None,
    checkpoint_id: str | None,
    graph_id: str,
    max_state_bytes: int | None,
) -> Updated:
    """Runs `aupdate_state` on a saver over `staged` and reads what the thread then waits for."""
    from langgraph.errors import InvalidUpdateError

    from turnstile_server.runtime.langgraph.blobs import ChannelCache
    from turnstile_server.runtime.langgraph.saver import TurnstileSaver

    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    config = cast("RunnableConfig", {"configurable": configurable})
    latest = cast("RunnableConfig", {"configurable": {"thread_id": thread_id}})
    saver = TurnstileSaver(
        staged, serde=graph.shared.serde, cache=ChannelCache(), max_state_bytes=max_state_bytes
    )
    await saver.aget_tuple(latest)  # the newest checkpoint the update is computed on: its base
    async with graph.readable(dict(config), graph_id, "threads.update") as compiled:
        if as_node and as_node not in compiled.nodes:
            raise InvalidArgument(
                f"as_node: the graph has no node {as_node!r}; its nodes:"
                f" {', '.join(sorted(n for n in compiled.nodes if not n.startswith('__')))}",
                reason="INVALID_NODE_NAMES",
                field="as_node",
            )
        bound = with_saver(compiled, saver)
        try:
            written = await bound.aupdate_state(config, values, as_node=as_node or None)
        except (InvalidUpdateError, ValueError, TypeError) as exc:
            raise InvalidArgument(
                f"the graph refused the update: {exc}", reason="INVALID_INPUT", field="values"
            ) from None
        state = await bound.aget_state(latest)
    ref = written["configurable"]
    interrupts = [
        {"id": interrupt.id, "value": to_json(interrupt.value), "task_id": task.id}
        for task in state.tasks
        for interrupt in task.interrupts
    ]
    return Updated(
        CheckpointRef(thread_id, str(ref["checkpoint_id"]), str(ref.get("checkpoint_ns", ""))),
        list(state.next),
        interrupts if state.next else None,
    )
