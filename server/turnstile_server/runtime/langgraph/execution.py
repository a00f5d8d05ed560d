"""One attempt of a run of a LangGraph graph: its config, its input, `astream`, its events.

The config's `configurable` is the assistant's, then the run's (merged by the API), then
`thread_id`, `run_id`, `assistant_id` and `graph_id`, as LangGraph Platform merges them; its
`metadata` names the run and its attempt, which LangGraph copies into every checkpoint's
metadata. A resumed attempt (the server stopped or crashed during the run) continues from the
run's last committed checkpoint with input `None`, as LangGraph resumes, so its input is
applied once; when the run had committed no checkpoint yet, its input (or command) is applied
then, from its `checkpoint_id` for a fork, as on its first attempt.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from contextlib import aclosing, suppress
from typing import TYPE_CHECKING, Any

from turnstile_server.runtime.interface import RunHost
from turnstile_server.runtime.langgraph.commands import check_resume, report_waiting
from turnstile_server.runtime.langgraph.messages import to_json
from turnstile_server.runtime.langgraph.runtime import with_saver
from turnstile_server.runtime.langgraph.streams import Streamer, langgraph_modes
from turnstile_server.runtime.langgraph.writes import HeldWrites
from turnstile_server.store import RunRecord

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from langgraph.pregel import Pregel
    from langgraph.types import StateSnapshot

    from turnstile_server.runtime.langgraph.runtime import LangGraphGraph, _Shared
    from turnstile_server.runtime.langgraph.saver import TurnstileSaver


def run_config(run: RunRecord, *, resumed: bool = False) -> dict[str, Any]:
    """The `RunnableConfig` of one attempt of `run` (a new dict; the record is not changed).

    `resumed`: the attempt continues from the run's own last checkpoint (an earlier attempt
    committed one), so a fork's `checkpoint_id` no longer applies; an attempt after one that
    committed nothing starts from the `checkpoint_id` again, not from the thread's latest."""
    config = dict(run.config)
    for key in ("recursion_limit", "max_concurrency"):  # checked whole at admission (admission.py)
        value = config.get(key)
        if isinstance(value, float) and value.is_integer():
            config[key] = int(value)  # JSON numbers arrive as doubles; LangGraph counts in ints
    ids = {
        "thread_id": run.thread_id,
        "run_id": run.run_id,
        "assistant_id": run.assistant_id,
        "graph_id": run.graph_id,
    }
    config["configurable"] = {**(config.get("configurable") or {}), **ids}
    if run.checkpoint_id and not resumed:  # time travel: continue (fork) from there
        config["configurable"]["checkpoint_id"] = run.checkpoint_id
    config["metadata"] = {**(config.get("metadata") or {}), **ids, "run_attempt": run.attempt}
    if run.attempt == 1:  # LangChain's callbacks name the run by its id (first attempt only)
        with suppress(ValueError):
            config["run_id"] = uuid.UUID(run.run_id)
    return config


async def execute(graph: LangGraphGraph, host: RunHost) -> None:
    """Drives one attempt of the host's run through the graph's `astream`.

    LangGraph runs a superstep's tasks in tasks of its own and, cancelled, cancels and awaits
    them; but cancelled again while it awaits them, it gives up waiting and lets them run on
    (`AsyncPregelLoop.__aexit__`). A run cancelled twice (an interrupt, then a rollback) would
    then end while its node still unwinds, and the next run could start beside it. So LangGraph
    runs in a task of its own, cancelled once however often the run is, and `execute` returns
    only once it has unwound whole.

    A run's input stays in the thread however early the run is cut (SPEC §3), as a native
    run's does (its store writes it as the run starts). LangGraph writes it inside `astream`
    into its `input` checkpoint's `__start__` channel, and applies it to the state in the
    START superstep, whose checkpoint (`loop`) follows: a run cut between the two would leave
    its input in `__start__`, where the next run's input overwrites it. So the run is cut only
    once the START superstep's checkpoint has landed (or it has none to wait for: a resumed
    attempt, a command), or with `exit` durability once START's superstep has run (the
    checkpoint LangGraph puts as it exits then holds the input: `_watching_start`): a
    cancellation that arrives while the graph is resolved (a factory) or before then waits
    (START runs no node of the graph); the superstep in flight after it is discarded as before.
    """
    applied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    driving = asyncio.ensure_future(_drive(graph, host, applied))
    try:
        await asyncio.shield(driving)
    except asyncio.CancelledError:
        while not driving.done() and not applied.done():
            try:
                await asyncio.wait([driving, applied], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                continue  # cut again: the input still lands first
        if not driving.done():
            driving.cancel()
        while not driving.done():
            try:
                await asyncio.wait([driving])
            except asyncio.CancelledError:
                continue  # already cancelled once: it is unwinding
        if not driving.cancelled():
            driving.exception()  # retrieved: the run ends cancelled whatever it raised
        raise


async def _drive(graph: LangGraphGraph, host: RunHost, applied: asyncio.Future[None]) -> None:
    """Runs the attempt; resolves `applied` once its input is in the thread (see `execute`)."""
    from langgraph.types import Command

    from turnstile_server.runtime.langgraph.saver import TurnstileSaver

    def landed(metadata: Any = None) -> None:
        if not applied.done() and (metadata is None or metadata.get("source") != "input"):
            applied.set_result(None)

    run = host.run
    held = HeldWrites(host.langgraph)
    shared = graph.shared
    saver = TurnstileSaver(
        held,
        serde=shared.serde,
        cache=shared.cache,
        on_root_put=landed,
        max_state_bytes=host.max_state_bytes,
    )
    resumed = await _resumed(run, saver)
    config = run_config(run, resumed=resumed)
    subgraphs = run.stream_subgraphs
    streamer = Streamer(host, subgraphs=subgraphs)
    async with graph.resolved(config, "threads.create_run") as compiled:
        bound = with_saver(compiled, saver)
        payload = None if resumed else _input(run)
        kwargs = _stream_options(compiled, run)
        take: Callable[[tuple[str, ...], str, Any], None] = streamer.chunk
        if payload is None or isinstance(payload, Command):
            landed()  # no input checkpoint to wait for (see `execute`)
        elif run.durability == "exit":
            take = _watching_start(streamer, kwargs, landed)
        else:
            held.hold_input = True  # written with START's checkpoint (`HeldWrites.put`)
        if isinstance(payload, Command) and "resume" in (run.command or {}):
            await check_resume(bound, config, host)  # admitted behind a run: unchecked so far
        try:
            if "events" in run.stream_mode:
                await _stream_events(bound, payload, config, kwargs, take, host)
            else:
                stream_of: Any = bound.astream  # its options are a dict, built per run
                chunks = stream_of(payload, config, subgraphs=subgraphs, **kwargs)
                async with aclosing(chunks) as stream:
                    async for chunk in stream:
                        take(*_parts(chunk, subgraphs))
        except asyncio.CancelledError:
            # The superstep in flight is discarded: its finished tasks' writes never land,
            # and what the cache remembers of the thread may be a version the run's last put
            # never committed (or that a rollback deletes next).
            await held.flush_inputs()  # (none: the cut waited for START's checkpoint)
            held.discard()
            shared.cache.forget({run.thread_id})
            if run.close_tool_calls and await host.cancelled_for() == "interrupt":
                await _close_tool_calls(bound, config, held)
            raise
        except BaseException as exc:
            if saver.refused is not None:  # whatever failed after it (an event's own check)
                await _refused(held)
                raise saver.refused from None
            await held.flush()  # the state shows the task's error
            mapped = _run_error(exc)
            if mapped is exc:
                raise
            raise mapped from None
        if saver.refused is not None:  # LangGraph re-raises a background write's failure
            await _refused(held)  # only when nothing else is raised: to be sure
            raise saver.refused
        await held.flush()
        saver.serve_last = True  # the graph has returned: its last put is the thread's latest
        state = await report_waiting(bound, config, host)  # stopped for a human? (commands.py)
        await _keep_values(bound, saver, state, shared, run.run_id)


async def _refused(held: HeldWrites) -> None:
    """The saver refused a step (too deep, too large): the run's input stays, and the writes
    held against the checkpoint before it, its tasks', never land (the thread would show
    them)."""
    await held.flush_inputs()
    held.discard()


async def keep_input(graph: LangGraphGraph, host: RunHost) -> None:
    """Applies the input of a run interrupted before it executed (stopped as it started) to
    its thread, as an interrupt keeps it (SPEC §3; a native run's store wrote it as the run
    started): LangGraph's own input and START checkpoints, through `astream` stopped before
    every node (`interrupt_before="*"`), so the thread is as if the run had been cut right
    after START's superstep. Nothing for a rollback (its rows go), a command, or an attempt
    that resumes a run whose input is already in the thread."""
    from langgraph.types import Command

    from turnstile_server.runtime.langgraph.saver import TurnstileSaver

    run = host.run
    if await host.cancelled_for() != "interrupt":
        return
    held = HeldWrites(host.langgraph)
    shared = graph.shared
    saver = TurnstileSaver(held, serde=shared.serde, cache=shared.cache)
    resumed = await _resumed(run, saver)
    config = run_config(run, resumed=resumed)
    async with graph.resolved(config, "threads.create_run") as compiled:
        payload = None if resumed else _input(run)
        if payload is None or isinstance(payload, Command):
            return
        bound: Any = with_saver(compiled, saver)
        options = {**_stream_options(compiled, run), "durability": "sync"}
        options.pop("interrupt_after", None)
        options["interrupt_before"] = "*"
        options["stream_mode"] = ["updates"]
        async with aclosing(bound.astream(payload, config, **options)) as stream:
            async for _ in stream:
                pass
        await held.flush()


async def _close_tool_calls(bound: Any, config: dict[str, Any], held: HeldWrites) -> None:
    """Closes the interrupted run's dangling tool calls in a checkpoint of its own (see
    `repair`); a failure is logged, never raised over the cancellation."""
    from turnstile_server.runtime.langgraph.repair import close_dangling

    try:
        closed = await close_dangling(bound, config)
        await held.flush()
    except Exception as exc:
        log.warning("run %s: dangling tool calls left open: %r", config["metadata"]["run_id"], exc)
        return
    if closed:
        log.info("run %s: closed %d dangling tool calls", config["metadata"]["run_id"], closed)


async def _keep_values(
    bound: Any, saver: TurnstileSaver, state: StateSnapshot, shared: _Shared, run_id: str
) -> None:
    """Keeps the values at the run's own last checkpoint for WaitRun and JoinRun (read from
    the saver's `last_put`, as `state.run_values` would read them: without the writes of
    tasks that finished after it)."""
    last_id = saver.last_put.checkpoint_id
    if (
        last_id is None
        or (state.config or {}).get("configurable", {}).get("checkpoint_id") != last_id
    ):
        return
    remembered = saver.last_put.answer(last_id)
    if remembered is not None and remembered.pending_writes:
        at = {"configurable": {**state.config["configurable"], "checkpoint_id": last_id}}
        state = await bound.aget_state(at)
    shared.ended.keep(run_id, state.values)


def _watching_start(
    streamer: Streamer, kwargs: dict[str, Any], landed: Callable[[Any], None]
) -> Callable[[tuple[str, ...], str, Any], None]:
    """With `exit` durability nothing is put before the run ends, and LangGraph's exit
    checkpoint (put however the run ends) holds the input only once START's superstep has
    applied it: that is when the first root `checkpoints` chunk not of the input checkpoint
    comes (asked for here when the run did not ask for it; the streamer leaves it out then)."""
    modes = kwargs["stream_mode"]
    if "checkpoints" not in modes:
        kwargs["stream_mode"] = [*modes, "checkpoints"]

    def take(namespace: tuple[str, ...], mode: str, data: Any) -> None:
        if mode == "checkpoints" and not namespace and isinstance(data, dict):
            landed(data.get("metadata") or {})
        streamer.chunk(namespace, mode, data)

    return take


def _parts(chunk: Any, subgraphs: bool) -> tuple[tuple[str, ...], str, Any]:
    """(namespace, mode, data) of an `astream` chunk (a list of modes: `(mode, data)`, with
    subgraphs `(namespace, mode, data)`)."""
    if subgraphs:
        namespace, mode, data = chunk
        return tuple(namespace), mode, data
    mode, data = chunk
    return (), mode, data


async def _stream_events(
    bound: Any,
    payload: Any,
    config: dict[str, Any],
    kwargs: dict[str, Any],
    take: Callable[[tuple[str, ...], str, Any], None],
    host: RunHost,
) -> None:
    """`astream_events` v2, as LangGraph Platform runs the `events` mode: the root run's
    `on_chain_stream` events carry the other modes' chunks, every other event is an `events`
    event (those tagged `langsmith:hidden` are left out)."""
    root = str(config.setdefault("run_id", uuid.uuid4()))
    events = bound.astream_events(payload, config, version="v2", subgraphs=True, **kwargs)
    async with aclosing(events) as stream:
        async for event in stream:
            if "langsmith:hidden" in (event.get("tags") or ()):
                continue
            if event["event"] == "on_chain_stream" and str(event.get("run_id")) == root:
                take(*_parts(event["data"]["chunk"], True))
            elif host.wants("events"):
                host.emit("events", to_json(event), mode="events")


def _stream_options(compiled: Pregel[Any], run: RunRecord) -> dict[str, Any]:
    options: dict[str, Any] = {
        "stream_mode": langgraph_modes(run.stream_mode),
        "durability": run.durability,
    }
    for name in ("interrupt_before", "interrupt_after"):
        nodes: tuple[str, ...] | None = getattr(run, name)
        if nodes:
            options[name] = "*" if tuple(nodes) == ("*",) else list(nodes)
    context = run.context
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


async def _resumed(run: RunRecord, saver: Any) -> bool:
    """Whether this attempt resumes the run from a checkpoint of its own: an earlier attempt
    (the server stopped or crashed during it) committed one. Then `astream` gets None, and
    the run continues from the thread's latest checkpoint, its own."""
    if run.attempt <= 1:
        return False
    config = {"configurable": {"thread_id": run.thread_id, "checkpoint_ns": ""}}
    async for _ in saver.alist(config, filter={"run_id": run.run_id}, limit=1):
        return True
    return False


def _input(run: RunRecord) -> Any:
    """What `astream` gets when the run starts afresh: its command or its input."""
    command = run.command
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
