"""The LangGraph and human-in-the-loop run options on the wire: read, validated, and shown.

`CreateRun`, `StreamRun` and `WaitRun` carry `context`, `stream_subgraphs`, `command`,
`interrupt_before`, `interrupt_after`, `checkpoint_id`, `close_tool_calls` and
`on_pending_interrupt`; `Run` shows them back with `discarded_interrupts` (`wire.run_message`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from turnstile.v1 import run_pb2, run_service_pb2
from turnstile_server.api import wire
from turnstile_server.api.wire import ON_PENDING_INTERRUPT, from_value
from turnstile_server.errors import CheckpointNotFound, InvalidArgument, UnsupportedByGraph
from turnstile_server.policy import is_interrupt_id
from turnstile_server.runtime.langgraph.runtime import LangGraphGraph
from turnstile_server.store.langgraph_checkpoints import LangGraphCheckpoints

CreateLike = (
    run_service_pb2.CreateRunRequest
    | run_service_pb2.StreamRunRequest
    | run_service_pb2.WaitRunRequest
)

ALL_NODES = "*"
MAX_NODES = 256  # node names in one interrupt_before/interrupt_after/goto
MAX_NODE_NAME = 256


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The options of one request, validated, as `RunSpec` takes them."""

    context: dict[str, Any] | None
    stream_subgraphs: bool
    command: dict[str, Any] | None
    interrupt_before: tuple[str, ...] | None
    interrupt_after: tuple[str, ...] | None
    checkpoint_id: str | None
    close_tool_calls: bool | None
    on_pending_interrupt: str

    def spec_fields(self) -> dict[str, Any]:
        """The options as `RunSpec` keyword arguments."""
        return {name: getattr(self, name) for name in self.__slots__}

    def langgraph_only(self) -> list[str]:
        """The options given that only a LangGraph graph can honour."""
        given = {
            "command": self.command is not None,
            "interrupt_before": self.interrupt_before is not None,
            "interrupt_after": self.interrupt_after is not None,
            "checkpoint_id": self.checkpoint_id is not None,
        }
        return [name for name, present in given.items() if present]


def read(request: CreateLike, *, default_on_pending_interrupt: str) -> RunOptions:
    """Reads and validates the options of a run-creation request."""
    command = _command(request.command) if request.HasField("command") else None
    if command is not None and request.HasField("input"):
        raise InvalidArgument(
            "input and command are exclusive: a command continues the thread instead of new input",
            reason="INVALID_COMMAND",
            field="command",
        )
    return RunOptions(
        context=wire.to_dict(request.context, "context") if request.HasField("context") else None,
        stream_subgraphs=request.stream_subgraphs,
        command=command,
        interrupt_before=_nodes(request.interrupt_before, "interrupt_before"),
        interrupt_after=_nodes(request.interrupt_after, "interrupt_after"),
        checkpoint_id=wire.uuid_id(request.checkpoint_id, "checkpoint_id", required=False) or None,
        close_tool_calls=request.close_tool_calls if request.HasField("close_tool_calls") else None,
        on_pending_interrupt=wire.enum_value(
            ON_PENDING_INTERRUPT, request.on_pending_interrupt, "on_pending_interrupt"
        )
        or default_on_pending_interrupt,
    )


def check_runtime(options: RunOptions, graph_id: str, runtime: str) -> None:
    """Refuses (UnsupportedByGraph) the LangGraph-only options for a graph of another runtime."""
    if runtime == "langgraph":
        return
    given = options.langgraph_only()
    if given:
        raise UnsupportedByGraph(
            f"{', '.join(given)}: human in the loop and time travel need a LangGraph graph;"
            f" graph '{graph_id}' is a {runtime} graph",
            graph_id=graph_id,
            runtime=runtime,
            field=given[0],
        )


def _command(message: run_pb2.Command) -> dict[str, Any]:
    """A `Command` message as the record's dict, validated."""
    has_resume = message.HasField("resume")
    if has_resume and message.resume_by_id:
        raise InvalidArgument(
            "command: resume and resume_by_id are exclusive",
            reason="INVALID_COMMAND",
            field="command.resume_by_id",
        )
    command: dict[str, Any] = {}
    if has_resume:
        command["resume"] = from_value(message.resume, "command.resume")
    elif message.resume_by_id:
        by_id: dict[str, Any] = {}
        for interrupt_id in message.resume_by_id:
            if not is_interrupt_id(interrupt_id):
                raise InvalidArgument(
                    f"command.resume_by_id: {interrupt_id[:80]!r} is not an interrupt id (32"
                    " lower-case hexadecimal digits)",
                    reason="INVALID_COMMAND",
                    field="command.resume_by_id",
                )
            by_id[interrupt_id] = from_value(
                message.resume_by_id[interrupt_id], "command.resume_by_id"
            )
        command["resume"] = by_id
    if message.HasField("update"):
        command["update"] = wire.to_dict(message.update, "command.update")
    if message.goto:
        command["goto"] = list(_nodes(message.goto, "command.goto", star=False) or ())
    if not command:
        raise InvalidArgument(
            "command is empty: give resume, resume_by_id, update or goto",
            reason="INVALID_COMMAND",
            field="command",
        )
    return command


def _nodes(names: Any, field: str, *, star: bool = True) -> tuple[str, ...] | None:
    """A list of node names (None when empty); `*` (every node) only alone."""
    if not names:
        return None
    nodes = tuple(dict.fromkeys(names))
    if len(nodes) > MAX_NODES:
        raise _bad_nodes(field, f"at most {MAX_NODES} node names")
    for name in nodes:
        if not name or len(name) > MAX_NODE_NAME:
            raise _bad_nodes(field, f"a node name is empty or longer than {MAX_NODE_NAME}")
    if ALL_NODES in nodes and (not star or len(nodes) > 1):
        raise _bad_nodes(
            field, "'*' means every node and comes alone" if star else "'*' is not a node"
        )
    return nodes


def _bad_nodes(field: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {why}", reason="INVALID_NODE_NAMES", field=field)


async def check_langgraph(
    options: RunOptions, graph: object, checkpoints: LangGraphCheckpoints, thread_id: str
) -> None:
    """Refuses what a LangGraph graph cannot do: nodes it does not have (for a compiled graph;
    a factory's graph is known only per run) and a checkpoint the thread does not have."""
    if not isinstance(graph, LangGraphGraph):
        return
    compiled = graph.compiled
    if compiled is not None:
        nodes = {name for name in compiled.nodes if not name.startswith("__")}
        asked = {
            "interrupt_before": options.interrupt_before or (),
            "interrupt_after": options.interrupt_after or (),
            "command.goto": (options.command or {}).get("goto") or (),
        }
        for field, names in asked.items():
            unknown = [name for name in names if name != ALL_NODES and name not in nodes]
            if unknown:
                raise InvalidArgument(
                    f"{field}: the graph has no node {unknown[0]!r}; its nodes:"
                    f" {', '.join(sorted(nodes))}",
                    reason="INVALID_NODE_NAMES",
                    field=field,
                )
    if options.checkpoint_id and not await checkpoints.get(
        thread_id, "", options.checkpoint_id, {}
    ):
        raise CheckpointNotFound(thread_id, options.checkpoint_id)
