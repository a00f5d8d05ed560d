"""The LangGraph runtime: compiled graphs, `StateGraph`s and graph factories, run by `astream`.

A registered object is recognised without importing LangGraph (by its classes' names), so a
server whose graphs are all native never loads it. Each attempt of a run gets the graph with
Turnstile's saver (`with_saver`), whose storage is the run's `host.langgraph`:
every checkpoint, blob and write of the run goes through the host, under the run's id.

Cancellation (interrupt, rollback, DeleteThread, shutdown) reaches the graph's node at its next
await. The supersteps LangGraph has checkpointed stay; the one in flight is discarded: its
tasks' pending writes are held in memory (`writes.HeldWrites`) until the superstep's
checkpoint is put or the run ends by itself, so a cancelled step leaves none, and the next
run neither replays half of it (LangGraph hands a finished task's pending writes back on a
resume instead of running it again) nor sees its interrupts.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
)
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from turnstile_server.errors import GraphUnavailable, InvalidArgument
from turnstile_server.runtime.interface import PreparedGraph, RunHost

if TYPE_CHECKING:
    from langgraph.pregel import Pregel

    from turnstile_server.runtime.langgraph.blobs import ChannelCache
    from turnstile_server.runtime.langgraph.last_put import EndedValues
    from turnstile_server.store import LangGraphCheckpoints, RunRecord

log = logging.getLogger(__name__)

_KINDS = ("Pregel", "StateGraph")


def langgraph_kind(obj: object) -> str | None:
    """`Pregel` (a compiled graph), `StateGraph` (uncompiled) or None, by obj's classes."""
    if isinstance(obj, type):
        return None
    for cls in type(obj).__mro__:
        if cls.__name__ in _KINDS and cls.__module__.partition(".")[0] == "langgraph":
            return cls.__name__
    return None


def factory_parameters(obj: object) -> tuple[str, ...] | None:
    """What a graph factory takes, in order (`config`, `runtime`), or None if obj is none:
    a function or callable object of no parameter, one (the config, unless it is the runtime:
    named `runtime` or annotated with a `...Runtime` type) or two (a config and a runtime), as
    langgraph-api accepts them."""
    if isinstance(obj, type) or not callable(obj) or inspect.isasyncgenfunction(obj):
        return None
    try:
        params = _parameters(obj)
    except (TypeError, ValueError):
        return None
    if len(params) > 2:
        return None

    def role(p: inspect.Parameter) -> str:
        annotation = p.annotation if isinstance(p.annotation, str) else repr(p.annotation)
        return "runtime" if p.name == "runtime" or "Runtime" in annotation else "config"

    roles = tuple(role(p) for p in params)
    if len(roles) == 2 and sorted(roles) != ["config", "runtime"]:
        return None  # two parameters are a config and a runtime, as langgraph-api requires
    return roles


def _parameters(factory: Any) -> list[inspect.Parameter]:
    return [
        p
        for p in inspect.signature(factory).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]


@dataclass(frozen=True, slots=True)
class FactoryRuntime:
    """What a two-parameter factory gets besides its config, as langgraph-api's
    `ServerRuntime`: why the graph is wanted (`threads.create_run`, `threads.read`)."""

    access_context: str
    context: Any = None
    user: Any = None
    store: Any = None


class LangGraphRuntime:
    """Runs LangGraph graphs: compiled, `StateGraph`s (compiled once) and factories."""

    name = "langgraph"
    expects = (
        "a LangGraph graph (a compiled graph, a StateGraph, or a factory of 0 arguments, "
        "`config`, or `config` and `runtime` returning one)"
    )

    def __init__(self) -> None:
        self._shared = _Shared()

    def prepare(self, obj: object) -> PreparedGraph | None:
        """Return obj prepared if it is a LangGraph graph or a factory of one."""
        kind = langgraph_kind(obj)
        if kind == "Pregel":
            return LangGraphGraph(obj, self._shared, compiled=checked_graph(obj))
        if kind == "StateGraph":
            return LangGraphGraph(obj, self._shared, compiled=checked_graph(obj))
        params = factory_parameters(obj)
        if params is None:
            return None
        return LangGraphGraph(obj, self._shared, factory=cast(Any, obj), params=params)


def checked_graph(obj: object) -> Pregel[Any]:
    """A compiled graph Turnstile can run (a `StateGraph` is compiled); InvalidArgument if
    it is no graph or brings its own checkpointer (its checkpoints would bypass the store)."""
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.graph import StateGraph
    from langgraph.pregel import Pregel

    if isinstance(obj, StateGraph):
        obj = obj.compile()
    if not isinstance(obj, Pregel):
        raise InvalidArgument(f"{obj!r} is not a LangGraph graph")
    if isinstance(obj.checkpointer, BaseCheckpointSaver):
        raise InvalidArgument(
            f"the LangGraph graph {obj.name!r} was compiled with its own checkpointer "
            f"({type(obj.checkpointer).__name__}); Turnstile keeps its checkpoints in its "
            "store: compile it without one (`builder.compile()`)"
        )
    return obj


def with_saver(compiled: Pregel[Any], saver: Any) -> Pregel[Any]:
    """The compiled graph with `saver` as its checkpointer, through LangGraph's own `copy`.
    A shallow `copy.copy` (0252da2, ~40 us a run less) was taken back: with it,
    tests/test_langgraph_runtime.py's interrupted-as-it-starts test lost the run's input in 3
    of 20 runs under load, none of 14 with `copy`."""
    return compiled.copy(update={"checkpointer": saver})


_CREATING = threading.Lock()


@dataclass
class _Shared:
    """What every LangGraph graph of a runtime shares: the serializer and the channel cache
    of the runs' savers (shared by the graph loops; the cache locks itself), and the values
    ended runs left for WaitRun and JoinRun."""

    _serde: Any = None
    _cache: ChannelCache | None = None
    _read_cache: ChannelCache | None = None
    _ended: EndedValues | None = None

    @property
    def ended(self) -> EndedValues:
        with _CREATING:  # graph loops keep, the API's loop takes
            if self._ended is None:
                from turnstile_server.runtime.langgraph.last_put import EndedValues

                self._ended = EndedValues()
        return self._ended

    @property
    def serde(self) -> Any:
        if self._serde is None:
            from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

            self._serde = JsonPlusSerializer()
        return self._serde

    @property
    def cache(self) -> ChannelCache:
        with _CREATING:  # graph loops may ask at once
            if self._cache is None:
                from turnstile_server.runtime.langgraph.blobs import ChannelCache

                self._cache = ChannelCache()
        return self._cache

    def reader(self, checkpoints: LangGraphCheckpoints) -> Any:
        """A saver for state reads (the API's), with a channel cache apart from the runs'."""
        from turnstile_server.runtime.langgraph.blobs import ChannelCache
        from turnstile_server.runtime.langgraph.saver import TurnstileSaver

        if self._read_cache is None:
            self._read_cache = ChannelCache()
        return TurnstileSaver(checkpoints, serde=self.serde, cache=self._read_cache)


@dataclass(frozen=True, slots=True)
class LangGraphGraph:
    """A registered LangGraph graph: compiled once, or a factory called per run and read."""

    graph: object
    shared: _Shared = field(repr=False)
    compiled: Pregel[Any] | None = None
    factory: Callable[..., Any] | None = None
    params: tuple[str, ...] = ()
    runtime: str = LangGraphRuntime.name

    @asynccontextmanager
    async def resolved(self, config: dict[str, Any], access: str) -> AsyncIterator[Pregel[Any]]:
        """The compiled graph for one run or read: the factory's (called with `config`, and a
        `FactoryRuntime` if it takes one), checked, for as long as the context lasts."""
        if self.compiled is not None:
            yield self.compiled
            return
        assert self.factory is not None
        runtime = FactoryRuntime(access)
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for p, role in zip(_parameters(self.factory), self.params, strict=True):
            value = runtime if role == "runtime" else config
            if p.kind == p.KEYWORD_ONLY:
                kwargs[p.name] = value
            else:
                args.append(value)
        made = self.factory(*args, **kwargs)
        if inspect.isawaitable(made):
            made = await made
        if isinstance(made, AbstractAsyncContextManager) or hasattr(made, "__aenter__"):
            async with made as entered:
                yield checked_graph(entered)
        elif isinstance(made, AbstractContextManager) and langgraph_kind(made) is None:
            with made as entered:
                yield checked_graph(entered)
        else:
            yield checked_graph(made)

    @asynccontextmanager
    async def readable(
        self, config: dict[str, Any], graph_id: str, access: str = "threads.read"
    ) -> AsyncIterator[Pregel[Any]]:
        """`resolved` for a state read or update (`threads.read`, `threads.update`): a factory
        that fails (raises, or returns what is no graph Turnstile runs) is GraphUnavailable,
        logged with its traceback here and answered FAILED_PRECONDITION without it; what the
        read or update itself raises passes through."""
        async with AsyncExitStack() as stack:
            try:
                compiled = await stack.enter_async_context(self.resolved(config, access))
            except Exception as exc:
                log.warning("graph %s: its factory failed (%s)", graph_id, access, exc_info=exc)
                raise GraphUnavailable(graph_id, exc) from None
            yield compiled

    async def execute(self, host: RunHost) -> None:
        """Run the graph through `astream` (see `execution.execute`)."""
        from turnstile_server.runtime.langgraph.execution import execute

        await execute(self, host)

    async def keep_input(self, host: RunHost) -> None:
        """Keep the input of a run interrupted before it executed (`execution.keep_input`)."""
        from turnstile_server.runtime.langgraph.execution import keep_input

        await keep_input(self, host)

    def check_run(
        self,
        run_input: dict[str, Any] | None,
        config: dict[str, Any],
        context: dict[str, Any] | None,
    ) -> None:
        """At admission: InvalidConfig or InvalidInput for what LangGraph would refuse (the
        input is checked against a compiled graph's input schema; a factory's graph is known
        only per run). See `admission`."""
        from turnstile_server.runtime.langgraph.admission import check_config, check_input

        check_config(config, context)
        if self.compiled is not None:
            check_input(self.compiled, run_input)

    def run_config(self, run: RunRecord) -> dict[str, Any]:
        """The run's config for LangGraph (see `execution.run_config`)."""
        from turnstile_server.runtime.langgraph.execution import run_config

        return run_config(run)
