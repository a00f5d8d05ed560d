"""Human in the loop for LangGraph runs: what a run that stopped waits for.

A LangGraph run stops for a human at a node's `interrupt()` or at `interrupt_before` /
`interrupt_after`; `astream` then simply ends. The run ends SUCCESS, as on LangGraph Platform,
and tells its host what its thread now waits for (`RunHost.awaiting_input`): the pending
interrupts of the graph's state, subgraphs' included, and the nodes that run on resume. The
store keeps them on the thread, which is INTERRUPTED awaiting input until a run answers.

A resume is checked against what the thread waits for at admission when the thread is idle;
one admitted behind another run is checked here when it starts (`check_resume`), against the
checkpoint it resumes, and refused there it ends ERROR before the graph runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from turnstile_server import policy
from turnstile_server.errors import NothingToResume, ResumeRefused, UnknownInterrupt
from turnstile_server.runtime.interface import RunHost
from turnstile_server.runtime.langgraph.messages import to_json

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.pregel import Pregel
    from langgraph.types import StateSnapshot


async def report_waiting(
    bound: Pregel[Any], config: dict[str, Any], host: RunHost
) -> StateSnapshot:
    """Tells the host, after a run ended by itself, whether the thread's latest checkpoint
    waits for input (its `next` is not empty), and on what; returns that state."""
    snapshot = await bound.aget_state(cast("RunnableConfig", _thread_config(config)))
    if not snapshot.next:
        return snapshot
    interrupts = [
        {"id": interrupt.id, "value": to_json(interrupt.value), "task_id": task.id}
        for task in snapshot.tasks
        for interrupt in task.interrupts
    ]
    host.awaiting_input(interrupts, list(snapshot.next))
    return snapshot


def _thread_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config that reads the thread's latest checkpoint (not a fork's starting one)."""
    configurable = {
        key: value for key, value in config["configurable"].items() if key != "checkpoint_id"
    }
    return {**config, "configurable": configurable}


async def check_resume(bound: Pregel[Any], config: dict[str, Any], host: RunHost) -> None:
    """Refuses (ResumeRefused: the run ends ERROR) a run's resume that the checkpoint it
    continues from (the thread's latest, or the run's `checkpoint_id`) does not wait on, as
    admission refuses it on an idle thread (`policy.check_resume`)."""
    run = host.run
    snapshot = await bound.aget_state(cast("RunnableConfig", config))
    pending = (
        [{"id": interrupt.id} for task in snapshot.tasks for interrupt in task.interrupts]
        if snapshot.next
        else None
    )
    try:
        policy.check_resume(run.thread_id, run.command, pending)
    except (NothingToResume, UnknownInterrupt) as refused:
        raise ResumeRefused(refused) from None
