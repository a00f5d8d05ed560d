"""The graph registry: graph ids, the runtimes that recognise graphs, and spec loading.

A graph is any object a runtime recognises (`turnstile_server.runtime`); the native runtime's
graphs are async generator functions `(state, ctx)` (`Graph`, given a `RunContext`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from turnstile_server.errors import InvalidArgument, UnknownGraph
from turnstile_server.graphs.echo import echo
from turnstile_server.langgraph_json import import_file, is_file_target
from turnstile_server.runtime.context import RunContext
from turnstile_server.runtime.interface import GraphRuntime, PreparedGraph
from turnstile_server.runtime.langgraph.runtime import LangGraphRuntime
from turnstile_server.runtime.native import Graph, NativeRuntime

__all__ = [
    "GRAPH_ID_PATTERN",
    "Graph",
    "GraphRegistry",
    "RunContext",
    "check_graph_id",
    "default_runtimes",
    "load_graph",
    "prepare_graph",
]

GRAPH_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")

_SPEC_FORM = "name=package.module:attribute or name=./path/to/file.py:attribute"


def default_runtimes() -> tuple[GraphRuntime, ...]:
    """Return the runtimes a registry asks by default, in the order it asks them."""
    return (NativeRuntime(), LangGraphRuntime())


class GraphRegistry:
    """Graphs by id, each prepared by the first runtime that recognises it."""

    __slots__ = ("_graphs", "_runtimes")

    def __init__(self, runtimes: Sequence[GraphRuntime] | None = None) -> None:
        self._runtimes = tuple(runtimes) if runtimes is not None else default_runtimes()
        self._graphs: dict[str, PreparedGraph] = {}

    @classmethod
    def with_builtins(
        cls, runtimes: Sequence[GraphRuntime] | None = None, *, omit: Collection[str] = ()
    ) -> GraphRegistry:
        """Return a registry holding the built-in `agent` and `echo` graphs, but those in omit."""
        registry = cls(runtimes)
        if "agent" not in omit:
            # Imported here, when a server is built, not by the first run: importing LangGraph
            # takes about a second, which inside a run would stall the server's event loop.
            from turnstile_server.graphs.agent import graph as agent

            registry.register("agent", agent)
        if "echo" not in omit:
            registry.register("echo", echo)
        return registry

    def register(self, graph_id: str, graph: object) -> None:
        """Add a graph under a new id; InvalidArgument if no runtime runs it."""
        check_graph_id(graph_id)
        if graph_id in self._graphs:
            raise InvalidArgument(f"graph '{graph_id}' is already registered")
        self._graphs[graph_id] = prepare_graph(
            graph, f"graph '{graph_id}': {graph!r}", self._runtimes, where=f"graph '{graph_id}'"
        )

    def get(self, graph_id: str) -> object:
        """Return the object registered under graph_id."""
        return self.prepared(graph_id).graph

    def prepared(self, graph_id: str) -> PreparedGraph:
        """Return the graph registered under graph_id, prepared by its runtime."""
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


def prepare_graph(
    obj: object,
    what: str,
    runtimes: Sequence[GraphRuntime] | None = None,
    *,
    where: str | None = None,
) -> PreparedGraph:
    """Return obj prepared by the first runtime that recognises it; else InvalidArgument
    saying what each runtime expects (`what` names obj in the message). A runtime's own
    refusal (a LangGraph graph with its own checkpointer) is prefixed with `where`, the graph's
    id or spec, so that a server with several graphs says which one."""
    asked = tuple(runtimes) if runtimes is not None else default_runtimes()
    for runtime in asked:
        try:
            prepared = runtime.prepare(obj)
        except InvalidArgument as exc:
            if where is None:
                raise
            raise InvalidArgument(f"{where}: {exc.message}", reason=exc.reason) from None
        if prepared is not None:
            return prepared
    expected = "; nor ".join(f"{runtime.expects} ({runtime.name} runtime)" for runtime in asked)
    raise InvalidArgument(f"{what} is not {expected or 'a graph: no runtime is registered'}")


def check_graph_id(graph_id: str) -> None:
    """Raise InvalidArgument unless graph_id is a valid graph id."""
    if not isinstance(graph_id, str) or not GRAPH_ID_PATTERN.fullmatch(graph_id):
        raise InvalidArgument(
            f"invalid graph id {graph_id!r}: use a letter, then up to 63 letters, digits, "
            "'_', '.' or '-'"
        )


def load_graph(spec: str) -> tuple[str, Any]:
    """Import the graph a `name=package.module:attribute` or `name=./file.py:attribute` spec
    names (a file as `langgraph.json` names one: its path has a `/` or ends in `.py`, relative
    to the current directory); return (name, graph).

    InvalidArgument if it cannot be imported or no runtime recognises what it names.
    """
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
        if is_file_target(module_name):
            module = import_file(Path(module_name).resolve(), Path.cwd())
        else:
            module = importlib.import_module(module_name)
    except FileNotFoundError:
        raise InvalidArgument(f"graph spec {spec!r}: no such file {module_name!r}") from None
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

    prepare_graph(
        obj, f"graph spec {spec!r}: '{module_name}:{attribute}'", where=f"graph spec {spec!r}"
    )
    return name, obj
