"""A run's options (`store.records.RunOptions`) on the wire: read, validated, and shown.

`CreateRun`, `StreamRun` and `WaitRun` carry each option in a field of its name, and `Run`
shows it back in a field of the same name. `FIELDS` says, once per option, how its field is
read (and validated) and shown, by the kind of value it holds; a new stored run field is one
line there (the kinds below cover seconds, enums, objects, flags, node lists and ids). A server
option may give a field its default (`config.Option.run_field`): a request that leaves the
field unset gets it at admission.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from turnstile.v1 import run_pb2, run_service_pb2
from turnstile_server.api import wire
from turnstile_server.api.wire import from_value, to_struct, to_value
from turnstile_server.errors import CheckpointNotFound, InvalidArgument, UnsupportedByGraph
from turnstile_server.policy import is_interrupt_id
from turnstile_server.runtime.langgraph.runtime import LangGraphGraph
from turnstile_server.store.langgraph_checkpoints import LangGraphCheckpoints
from turnstile_server.store.records import RUN_OPTIONS, RunOptions

CreateLike = (
    run_service_pb2.CreateRunRequest
    | run_service_pb2.StreamRunRequest
    | run_service_pb2.WaitRunRequest
)

ALL_NODES = "*"
MAX_NODES = 256  # node names in one interrupt_before/interrupt_after/goto
MAX_NODE_NAME = 256


Message = Any
"""A request or a `Run` message, read and written by field name."""


@dataclass(frozen=True, slots=True)
class Kind:
    """How a field of one kind is read from a request (None: not given) and shown on `Run`."""

    read: Callable[[Message, str], Any]
    show: Callable[[Message, str, Any], None]


def _set(message: Message, name: str, value: Any) -> None:
    setattr(message, name, value)


def _set_given(message: Message, name: str, value: Any) -> None:
    if value is not None:
        setattr(message, name, value)


def _seconds(request: Message, name: str) -> float | None:
    return wire.seconds(getattr(request, name), name) or None


def _show_seconds(message: Message, name: str, value: float | None) -> None:
    setattr(message, name, value or 0.0)


def _object(request: Message, name: str) -> dict[str, Any] | None:
    return wire.to_dict(getattr(request, name), name) if request.HasField(name) else None


def _show_object(message: Message, name: str, value: dict[str, Any] | None) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(to_struct(value))


def _flag(request: Message, name: str) -> bool:
    return bool(getattr(request, name))


def _optional_flag(request: Message, name: str) -> bool | None:
    return getattr(request, name) if request.HasField(name) else None


def _nodes(request: Message, name: str) -> tuple[str, ...] | None:
    return nodes(getattr(request, name), name)


def _show_names(message: Message, name: str, value: tuple[str, ...] | None) -> None:
    getattr(message, name).extend(value or ())


def _checkpoint(request: Message, name: str) -> str | None:
    return wire.uuid_id(getattr(request, name), name, required=False) or None


def _show_text(message: Message, name: str, value: str | None) -> None:
    setattr(message, name, value or "")


def _command_field(request: Message, name: str) -> dict[str, Any] | None:
    """The request's command, validated; a command and an input are exclusive."""
    if not request.HasField(name):
        return None
    command = _command(request.command)
    if request.HasField("input"):
        raise InvalidArgument(
            "input and command are exclusive: a command continues the thread instead of new input",
            reason="INVALID_COMMAND",
            field="command",
        )
    return command


def _show_command(message: Message, name: str, value: dict[str, Any] | None) -> None:
    if value is not None:
        getattr(message, name).CopyFrom(command_message(value))


def _enum(table: Mapping[Any, str]) -> Kind:
    """An enum field; its unspecified value (`""` in `table`) reads as not given."""
    numbers = {name: number for number, name in table.items() if name}

    def read(request: Message, name: str) -> str | None:
        return wire.enum_value(table, getattr(request, name), name) or None

    def show(message: Message, name: str, value: str) -> None:
        setattr(message, name, numbers.get(value, 0))

    return Kind(read, show)


SECONDS = Kind(_seconds, _show_seconds)  # 0 (not given) to a year
OBJECT = Kind(_object, _show_object)  # a JSON object (`Struct`), None when absent
FLAG = Kind(_flag, _set)
OPTIONAL_FLAG = Kind(_optional_flag, _set_given)  # an `optional bool`: None when not set
NODES = Kind(_nodes, _show_names)  # node names, `*` for every node (see `nodes`)
CHECKPOINT = Kind(_checkpoint, _show_text)  # a checkpoint id (a UUID), None when empty
COMMAND = Kind(_command_field, _show_command)  # LangGraph's `Command` (see `_command`)

FIELDS: dict[str, Kind] = {
    # In the order they are read, so the first bad one is the one refused.
    "command": COMMAND,
    "context": OBJECT,
    "stream_subgraphs": FLAG,
    "interrupt_before": NODES,
    "interrupt_after": NODES,
    "checkpoint_id": CHECKPOINT,
    "close_tool_calls": OPTIONAL_FLAG,
    "on_pending_interrupt": _enum(wire.ON_PENDING_INTERRUPT),
    "timeout_seconds": SECONDS,
    "durability": _enum(wire.DURABILITIES),
}
if set(FIELDS) != set(RUN_OPTIONS):
    raise TypeError(
        f"api/run_options.FIELDS and RunOptions differ: {set(FIELDS) ^ set(RUN_OPTIONS)}"
    )


def read(request: CreateLike, defaults: Mapping[str, Any]) -> RunOptions:
    """Reads and validates the options of a run-creation request; a field not given takes its
    default from `defaults` (the server's, by field name), else the record's."""
    values: dict[str, Any] = {}
    for name, kind in FIELDS.items():
        value = kind.read(request, name)
        if value is None:
            value = defaults.get(name)
        if value is not None:
            values[name] = value
    return RunOptions(**values)


def show(run: RunOptions, message: run_pb2.Run) -> None:
    """Fills the option fields of a `Run` message from a run."""
    for name, kind in FIELDS.items():
        kind.show(message, name, getattr(run, name))


def langgraph_only(options: RunOptions) -> list[str]:
    """The options given that only a LangGraph graph can honour."""
    given = {
        "command": options.command is not None,
        "interrupt_before": options.interrupt_before is not None,
        "interrupt_after": options.interrupt_after is not None,
        "checkpoint_id": options.checkpoint_id is not None,
    }
    return [name for name, present in given.items() if present]


def check_runtime(options: RunOptions, graph_id: str, runtime: str) -> None:
    """Refuses (UnsupportedByGraph) the LangGraph-only options for a graph of another runtime."""
    if runtime == "langgraph":
        return
    given = langgraph_only(options)
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
        command["goto"] = list(nodes(message.goto, "command.goto", star=False) or ())
    if not command:
        raise InvalidArgument(
            "command is empty: give resume, resume_by_id, update or goto",
            reason="INVALID_COMMAND",
            field="command",
        )
    return command


def nodes(names: Any, field: str, *, star: bool = True) -> tuple[str, ...] | None:
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


def command_message(command: dict[str, Any]) -> run_pb2.Command:
    """A run's command as a `Command` message: a resume map whose keys are all interrupt ids
    shows as `resume_by_id`, as LangGraph reads it."""
    message = run_pb2.Command()
    if "resume" in command:
        resume = command["resume"]
        if isinstance(resume, dict) and resume and all(map(is_interrupt_id, resume)):
            for interrupt_id, item in resume.items():
                message.resume_by_id[interrupt_id].CopyFrom(to_value(item))
        else:
            message.resume.CopyFrom(to_value(resume))
    if "update" in command:
        message.update.CopyFrom(to_struct(command["update"]))
    message.goto.extend(command.get("goto", ()))
    return message


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
