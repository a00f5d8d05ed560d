"""One attempt of a run of a LangGraph graph: its config, its input, `astream`, its events.

The config's `configurable` is the assistant's, then the run's (merged by the API), then
`thread_id`, `run_id`, `assistant_id` and `graph_id`, as LangGraph Platform merges them; its
`metadata` names the run and its attempt, which LangGraph copies into every checkpoint's
metadata. A resumed attempt (the server stopped or crashed during the run) continues from the
run's last committed checkpoint with input `None`, as LangGraph resumes, so its input is
applied once; when the run had committed no checkpoint yet, its input is applied then.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import aclosing, suppress
from typing import TYPE_CHECKING, Any

from turnstile_server.runtime.interface import RunHost
from turnstile_server.runtime.langgraph.commands import report_waiting
from turnstile_server.runtime.langgraph.streams import Streamer, langgraph_modes
from turnstile_server.runtime.langgraph.writes import HeldWrites
from turnstile_server.store import RunRecord

if TYPE_CHECKING:
    from langgraph.pregel import Pregel

    from turnstile_server.runtime.langgraph.runtime import LangGraphGraph


def run_config(run: RunRecord) -> dict[str, Any]:
    """The `RunnableConfig` of one attempt of `run` (a new dict; the record is not changed)."""
    config = dict(run.config)
    ids = {
        "thread_id": run.thread_id,
        "run_id": run.run_id,
        "assistant_id": run.assistant_id,
        "graph_id": run.graph_id,
    }
    config["configurable"] = {**(config.get("configurable") or {}), **ids}
    if run.checkpoint_id and run.attempt == 1:  # time travel: continue (fork) from there
        config["configurable"]["checkpoint_id"] = run.checkpoint_id
    config["metadata"] = {**(config.get("metadata") or {}), **ids, "run_attempt": run.attempt}
    if run.attempt == 1:  # LangChain's callbacks name the run by its id (first attempt only)
        with suppress(ValueError):
            config["run_id"] = uuid.UUID(run.run_id)
    return config


async def execute(graph: LangGraphGraph, host: RunHost) -> None:
    """Drives one attempt of the host's run through the graph's `astream`."""
    from turnstile_server.runtime.langgraph.saver import TurnstileSaver

    run = host.run
    held = HeldWrites(host.langgraph)
    shared = graph.shared
    saver = TurnstileSaver(held, serde=shared.serde, cache=shared.cache)
    config = run_config(run)
    streamer = Streamer(host, subgraphs=bool(getattr(run, "stream_subgraphs", False)))
    async with graph.resolved(config, "threads.create_run") as compiled:
        bound = compiled.copy(update={"checkpointer": saver})
        payload = await _input(run, saver)
        kwargs = _stream_options(compiled, run)
        try:
            stream_of: Any = bound.astream  # its options are a dict, built per run
            chunks = stream_of(payload, config, subgraphs=True, **kwargs)
            async with aclosing(chunks) as stream:
                async for namespace, mode, data in stream:
                    streamer.chunk(namespace, mode, data)
        except asyncio.CancelledError:
            # The superstep in flight is discarded: its finished tasks' writes never land,
            # and what the cache remembers of the thread may be a version the run's last put
            # never committed (or that a rollback deletes next).
            held.discard()
            shared.cache.forget({run.thread_id})
            raise
        except BaseException as exc:
            await held.flush()  # the state shows the task's error
            mapped = _run_error(exc)
            if mapped is exc:
                raise
            raise mapped from None
        await held.flush()
        await report_waiting(bound, config, host)  # stopped for a human? (commands.py)


def _stream_options(compiled: Pregel[Any], run: RunRecord) -> dict[str, Any]:
    options: dict[str, Any] = {
        "stream_mode": langgraph_modes(run.stream_mode),
        "durability": run.durability,
    }
    for name in ("interrupt_before", "interrupt_after"):
        nodes = getattr(run, name, None)
        if nodes:
            options[name] = "*" if tuple(nodes) == ("*",) else list(nodes)
    context = getattr(run, "context", None)
    if context:
        options["context"] = filtered_context(compiled, context)
    return options


def filtered_context(compiled: Pregel[Any], context: dict[str, Any]) -> dict[str, Any]:
    """The context's keys the graph's context schema declares (all, without a schema), as
    LangGraph Platform filters them."""
    try:
        schema = compiled.get_context_jsonschema()
    except Exception:
        return context
    properties = (schema or {}).get("properties")
    if not properties:
        return context
    return {key: value for key, value in context.items() if key in properties}


async def _input(run: RunRecord, saver: Any) -> Any:
    """What `astream` gets: None to resume a run that committed checkpoints before its server
    stopped, else the run's command or input."""
    if run.attempt > 1:
        config = {"configurable": {"thread_id": run.thread_id, "checkpoint_ns": ""}}
        async for _ in saver.alist(config, filter={"run_id": run.run_id}, limit=1):
            return None
    command = getattr(run, "command", None)
    if command:
        return _command(command)
    return run.input


def _command(command: dict[str, Any]) -> Any:
    """A run's `command` as LangGraph's `Command` (a `goto` of `{node, input}` is a `Send`)."""
    from langgraph.types import Command, Send

    goto = command.get("goto")
    if isinstance(goto, dict):
        goto = Send(goto["node"], goto.get("input"))
    elif isinstance(goto, list):
        goto = [Send(g["node"], g.get("input")) if isinstance(g, dict) else g for g in goto]
    return Command(
        resume=command.get("resume"),
        update=command.get("update"),
        goto=goto if goto is not None else (),
    )


def _run_error(exc: BaseException) -> BaseException:
    """How a graph's failure ends its run: LangGraph's recursion limit has its own reason."""
    from langgraph.errors import GraphRecursionError

    if isinstance(exc, GraphRecursionError):
        from turnstile_server.errors import RecursionLimit

        return RecursionLimit(str(exc))
    return exc
