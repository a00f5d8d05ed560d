"""The graph API: what a graph receives (state, RunContext), the registry, and spec loading."""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from turnstile_server.errors import InvalidArgument, UnknownGraph
from turnstile_server.graphs.agent import agent
from turnstile_server.graphs.echo import echo

GRAPH_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")

_SPEC_FORM = "name=package.module:attribute"


class RunContext:
    """What a running graph knows about its run, and its channel for streamed events."""

    __slots__ = ("_emit", "attempt", "config", "input", "run_id", "thread_id")

    def __init__(
        self,
        *,
        run_id: str,
        thread_id: str,
        emit: Callable[[str, Any], None],
        attempt: int = 1,
        input: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.attempt = attempt
        self.input: dict[str, Any] = dict(input or {})
        self.config: dict[str, Any] = dict(config or {})
        self._emit = emit

    def __repr__(self) -> str:
        return (
            f"RunContext(run_id={self.run_id!r}, thread_id={self.thread_id!r}, "
            f"attempt={self.attempt})"
        )

    def configurable(self, key: str, default: Any = None) -> Any:
        """Return `config["configurable"][key]`, or default when it is not set."""
        configurable = self.config.get("configurable")
        if not isinstance(configurable, Mapping):
            return default
        return configurable.get(key, default)

    def emit_message_chunk(self, chunk: dict[str, Any]) -> None:
        """Stream a message chunk (a `messages` event) without waiting."""
        self._emit("messages", chunk)

    def emit_custom(self, data: Any) -> None:
        """Stream a graph-defined `custom` event without waiting."""
        self._emit("custom", data)


Graph = Callable[[Any, RunContext], AsyncIterator[dict[str, Any]]]
"""An async generator function: given the thread's state and a context, it yields step updates.

The state is a read-only `Mapping` (`Mapping[str, Any]`; its dicts and lists are read-only
too, `copy.deepcopy` gives plain data): the graph changes the thread only by yielding
updates, and the state shows each update once the run has applied it (`sync`: once it is
checkpointed). It is typed `Any` here so that graphs annotated with `dict` still type-check.
"""


class GraphRegistry:
    """Graphs by id."""

    __slots__ = ("_graphs",)

    def __init__(self) -> None:
        self._graphs: dict[str, Graph] = {}

    @classmethod
    def with_builtins(cls) -> GraphRegistry:
        """Return a registry holding the built-in `agent` and `echo` graphs."""
        registry = cls()
        registry.register("agent", agent)
        registry.register("echo", echo)
        return registry

    def register(self, graph_id: str, graph: Graph) -> None:
        """Add a graph under a new id."""
        check_graph_id(graph_id)
        if graph_id in self._graphs:
            raise InvalidArgument(f"graph '{graph_id}' is already registered")
        if not is_graph(graph):
            raise InvalidArgument(
                f"graph '{graph_id}': {graph!r} is not an async generator function"
            )
        self._graphs[graph_id] = graph

    def get(self, graph_id: str) -> Graph:
        """Return the graph registered under graph_id."""
        try:
            return self._graphs[graph_id]
        except KeyError:
            registered = ", ".join(self.ids()) or "(none)"
            raise UnknownGraph(f"unknown graph '{graph_id}'; registered: {registered}") from None

    def ids(self) -> list[str]:
        """Return the registered graph ids, sorted."""
        return sorted(self._graphs)

    def __contains__(self, graph_id: object) -> bool:
        return graph_id in self._graphs

    def __len__(self) -> int:
        return len(self._graphs)


def check_graph_id(graph_id: str) -> None:
    """Raise InvalidArgument unless graph_id is a valid graph id."""
    if not isinstance(graph_id, str) or not GRAPH_ID_PATTERN.fullmatch(graph_id):
        raise InvalidArgument(
            f"invalid graph id {graph_id!r}: use a letter, then up to 63 letters, digits, "
            "'_', '.' or '-'"
        )


def is_graph(obj: object) -> bool:
    """Tell whether obj can be called as a graph (an async generator function or object)."""
    if inspect.isasyncgenfunction(obj):
        return True
    if inspect.isclass(obj) or not callable(obj):
        return False
    return inspect.isasyncgenfunction(type(obj).__call__)


def load_graph(spec: str) -> tuple[str, Graph]:
    """Import the graph a `name=package.module:attribute` spec names; return (name, graph)."""
    name, equals, target = spec.partition("=")
    module_name, colon, attribute = target.partition(":")
    name, module_name, attribute = name.strip(), module_name.strip(), attribute.strip()
    if not equals or not colon or not name or not module_name or not attribute:
        raise InvalidArgument(f"graph spec {spec!r}: expected {_SPEC_FORM}")
    try:
        check_graph_id(name)
    except InvalidArgument as exc:
        raise InvalidArgument(f"graph spec {spec!r}: {exc.message}") from None

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(
            f"graph spec {spec!r}: cannot import module '{module_name}': {exc}"
        ) from exc
    except Exception as exc:
        raise InvalidArgument(
            f"graph spec {spec!r}: importing module '{module_name}' failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc

    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidArgument(
                f"graph spec {spec!r}: module '{module_name}' has no attribute '{attribute}'"
            ) from None

    if not is_graph(obj):
        raise InvalidArgument(
            f"graph spec {spec!r}: '{module_name}:{attribute}' is not an async generator "
            "function (a graph is `async def graph(state, ctx): ... yield update`)"
        )
    graph: Graph = obj
    return name, graph
