"""Conversions between protobuf messages and the SDK's plain Python values."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Protocol,
    TypeVar,
    cast,
)

import orjson
from google.protobuf import struct_pb2, timestamp_pb2

from turnstile._fields import Conversions, dict_reader
from turnstile._types import (
    Assistant,
    CheckpointRef,
    CheckpointSource,
    Command,
    Interrupt,
    Interruption,
    Json,
    Run,
    StreamPart,
    Thread,
    ThreadState,
    ThreadStatus,
    ThreadStreamPart,
    ThreadTask,
)
from turnstile.v1 import assistant_pb2, run_pb2, thread_pb2, thread_service_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

_V = TypeVar("_V", bound=int)


class _HasValues(Protocol):
    """A message carrying values both ways: a `Struct`, or the same values as JSON text."""

    @property
    def values(self) -> struct_pb2.Struct: ...
    @property
    def values_json(self) -> bytes: ...


UNSPECIFIED = "unspecified"
"""What an enum field decodes to when the server left it unset or sent a newer value."""


class EnumCodec(Generic[_V]):
    """Maps a proto enum to lower-case strings without the value prefix, and back."""

    def __init__(
        self,
        enum: _EnumTypeWrapper[_V],
        prefix: str,
        what: str,
        *,
        dashed: bool = False,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._what = what
        self.enum_name = enum.DESCRIPTOR.full_name
        """The proto enum's full name (`turnstile.v1.RunStatus`)."""
        self._unspecified = enum.Value(prefix + "UNSPECIFIED")
        self._by_name: dict[str, _V] = {}
        self._by_number: dict[int, str] = {}
        for full_name, number in enum.items():
            if number == self._unspecified:
                continue
            name = full_name.removeprefix(prefix).lower()
            if dashed:  # LangGraph's spelling: `messages-partial`
                name = name.replace("_", "-")
            self._by_name[name] = number
            self._by_number[number] = name
        self._aliases = dict(aliases or {})  # accepted names encoded as another

    @property
    def names(self) -> tuple[str, ...]:
        """The accepted strings, in declaration order."""
        return tuple(self._by_name)

    def encode(self, name: str | None) -> _V:
        """Returns the enum value for `name`; `None` means unspecified (the server default)."""
        if name is None:
            return self._unspecified
        try:
            return self._by_name[self._aliases.get(name, name)]
        except (KeyError, TypeError):
            allowed = ", ".join(repr(n) for n in self._by_name)
            raise ValueError(f"unknown {self._what} {name!r}; expected one of {allowed}") from None

    def decode(self, number: int) -> str:
        """Returns the string for an enum value, `"unspecified"` for unset or unknown ones."""
        return self._by_number.get(number, UNSPECIFIED)


MULTITASK_STRATEGY = EnumCodec(run_pb2.MultitaskStrategy, "MULTITASK_STRATEGY_", "strategy")
RUN_STATUS = EnumCodec(run_pb2.RunStatus, "RUN_STATUS_", "run status")
THREAD_STATUS = EnumCodec(thread_pb2.ThreadStatus, "THREAD_STATUS_", "thread status")
STREAM_MODE = EnumCodec(
    run_pb2.StreamMode,
    "STREAM_MODE_",
    "stream mode",
    dashed=True,
    # LangGraph Platform's name for what `messages` streams: one chunk per event.
    aliases={"messages-tuple": "messages"},
)
CANCEL_ACTION = EnumCodec(run_pb2.CancelAction, "CANCEL_ACTION_", "cancel action")
IF_NOT_EXISTS = EnumCodec(run_pb2.IfNotExists, "IF_NOT_EXISTS_", "if_not_exists")
IF_EXISTS = EnumCodec(assistant_pb2.IfExists, "IF_EXISTS_", "if_exists")
ON_DISCONNECT = EnumCodec(run_pb2.OnDisconnect, "ON_DISCONNECT_", "on_disconnect")
DURABILITY = EnumCodec(run_pb2.Durability, "DURABILITY_", "durability")
ON_PENDING_INTERRUPT = EnumCodec(
    run_pb2.OnPendingInterrupt, "ON_PENDING_INTERRUPT_", "on_pending_interrupt"
)
INTERRUPTION = EnumCodec(thread_pb2.Interruption, "INTERRUPTION_", "interruption")
CHECKPOINT_SOURCE = EnumCodec(
    thread_pb2.CheckpointSource, "CHECKPOINT_SOURCE_", "checkpoint source"
)


# --- JSON <-> Struct ---------------------------------------------------------------------


def to_struct(value: Mapping[str, Any] | None, what: str) -> struct_pb2.Struct | None:
    """Encodes a JSON object as a Struct; `None` stays `None` (the field is left unset)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a mapping, not {type(value).__name__}")
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-compatible: {exc}") from exc
    return struct


def struct_to_dict(struct: struct_pb2.Struct) -> Json:
    """Decodes a Struct into a plain dict (numbers come back as floats)."""
    fields = struct.fields  # keys then lookups: the map's `items()` iterates in Python
    return {key: value_to_python(fields[key]) for key in fields}


def values_to_dict(message: _HasValues) -> Json:
    """Decodes a message's values: its `values_json` text when the server sent it (the
    transport asks for it), else its `values` Struct; both give the same dict."""
    if message.values_json:
        # The server writes every number as a double, as in a Struct: `5.0`, never `5`.
        return cast(Json, orjson.loads(message.values_json))
    return struct_to_dict(message.values)


def value_to_python(value: struct_pb2.Value) -> Any:
    """Decodes a Value into plain Python: dict, list, str, float, bool or None."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "number_value":
        return value.number_value
    if kind == "list_value":
        return [value_to_python(item) for item in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None


def iso(timestamp: timestamp_pb2.Timestamp) -> str:
    """Formats a Timestamp as an ISO-8601 string in UTC."""
    nanos = timestamp.nanos
    if 0 <= nanos < 1_000_000_000:  # valid: what `ToDatetime` computes, without its checks
        try:
            delta = datetime.timedelta(seconds=timestamp.seconds, microseconds=nanos // 1000)
            return (_EPOCH + delta).isoformat()
        except OverflowError:
            pass  # outside datetime's range: ToDatetime says why
    return timestamp.ToDatetime(tzinfo=datetime.UTC).isoformat()


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


# --- messages -> dicts -------------------------------------------------------------------


def run_to_dict(run: run_pb2.Run) -> Run:
    """Converts a Run message into a `Run` dict: each key of `Run` from the field of its name
    (how: `_fields.dict_reader`)."""
    return cast(Run, _read_run(run))


def command_to_dict(command: run_pb2.Command) -> Command:
    """Converts a Command message into a `Command` dict (a `resume_by_id` map as `resume`)."""
    result: Command = {}
    if command.HasField("resume"):
        result["resume"] = value_to_python(command.resume)
    elif command.resume_by_id:
        by_id = command.resume_by_id
        result["resume"] = {key: value_to_python(by_id[key]) for key in by_id}
    if command.HasField("update"):
        result["update"] = struct_to_dict(command.update)
    if command.goto:
        result["goto"] = list(command.goto)
    return result


def command_message(command: Mapping[str, Any] | None) -> run_pb2.Command | None:
    """Encodes a `Command` dict (langgraph_sdk's keys); `None` stays `None`.

    `resume` goes as it is: a dict keyed by interrupt ids resumes each, as LangGraph reads it.
    """
    if command is None:
        return None
    if not isinstance(command, Mapping):
        raise TypeError(f"command must be a mapping, not {type(command).__name__}")
    unknown = set(command) - {"resume", "update", "goto"}
    if unknown:
        raise ValueError(f"command: unknown keys {sorted(unknown)}; use resume, update, goto")
    message = run_pb2.Command()
    if "resume" in command:
        message.resume.CopyFrom(to_value(command["resume"], "command.resume"))
    update = command.get("update")
    if update is not None:
        if not isinstance(update, Mapping):
            update = dict(update)  # LangGraph's sequence of (key, value) pairs
        message.update.CopyFrom(_checked_struct(update, "command.update"))
    goto = command.get("goto")
    if goto is not None:
        names = [goto] if isinstance(goto, str) else list(goto)
        if not all(isinstance(name, str) for name in names):
            raise TypeError("command.goto: node names (strings) only; Send is not supported")
        message.goto.extend(names)
    return message


def _checked_struct(value: Mapping[str, Any], what: str) -> struct_pb2.Struct:
    struct = to_struct(value, what)
    assert struct is not None
    return struct


def to_value(value: Any, what: str) -> struct_pb2.Value:
    """Encodes JSON data as a Value."""
    wrapper = struct_pb2.Struct()
    try:
        wrapper.update({"v": value})
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-compatible: {exc}") from exc
    return wrapper.fields["v"]


def thread_to_dict(thread: thread_pb2.Thread) -> Thread:
    """Converts a Thread message into a `Thread` dict."""
    return {
        "thread_id": thread.thread_id,
        "metadata": struct_to_dict(thread.metadata),
        "status": cast(ThreadStatus, THREAD_STATUS.decode(thread.status)),
        "values": values_to_dict(thread),
        "create_time": iso(thread.create_time) if thread.HasField("create_time") else None,
        "update_time": iso(thread.update_time) if thread.HasField("update_time") else None,
        "interrupts": _interrupts_by_task(thread.interrupts),
        "interruption": cast(Interruption, interruption)
        if (interruption := INTERRUPTION.decode(thread.interruption)) != UNSPECIFIED
        else None,
    }


def _interrupts_by_task(interrupts: Iterable[thread_pb2.Interrupt]) -> dict[str, list[Interrupt]]:
    by_task: dict[str, list[Interrupt]] = {}
    for interrupt in interrupts:
        by_task.setdefault(interrupt.task_id, []).append(interrupt_to_dict(interrupt))
    return by_task


def interrupt_to_dict(interrupt: thread_pb2.Interrupt) -> Interrupt:
    """Converts an Interrupt message into an `Interrupt` dict (langgraph_sdk's keys)."""
    return {"id": interrupt.id, "value": value_to_python(interrupt.value)}


def checkpoint_ref_to_dict(ref: thread_pb2.CheckpointRef) -> CheckpointRef:
    """Converts a CheckpointRef message into langgraph_sdk's `Checkpoint` dict."""
    return {
        "thread_id": ref.thread_id,
        "checkpoint_ns": ref.checkpoint_ns,
        "checkpoint_id": ref.checkpoint_id or None,
        "checkpoint_map": None,
    }


def _task_to_dict(task: thread_pb2.ThreadTask) -> ThreadTask:
    return {
        "id": task.id,
        "name": task.name,
        "error": task.error or None,
        "interrupts": [interrupt_to_dict(i) for i in task.interrupts],
        "checkpoint": checkpoint_ref_to_dict(task.checkpoint)
        if task.HasField("checkpoint")
        else None,
        "state": None,
        "result": struct_to_dict(task.result) if task.HasField("result") else None,
    }


def assistant_to_dict(assistant: assistant_pb2.Assistant) -> Assistant:
    """Converts an Assistant message into an `Assistant` dict."""
    return {
        "assistant_id": assistant.assistant_id,
        "graph_id": assistant.graph_id,
        "name": assistant.name,
        "config": struct_to_dict(assistant.config),
        "metadata": struct_to_dict(assistant.metadata),
        "create_time": iso(assistant.create_time) if assistant.HasField("create_time") else None,
        "update_time": iso(assistant.update_time) if assistant.HasField("update_time") else None,
    }


def checkpoint_to_dict(checkpoint: thread_pb2.Checkpoint) -> ThreadState:
    """Converts a Checkpoint message into a `ThreadState` dict."""
    source = checkpoint.source
    created = iso(checkpoint.create_time) if checkpoint.HasField("create_time") else None
    return {
        "values": values_to_dict(checkpoint),
        "next": list(checkpoint.next),
        "checkpoint": {
            "thread_id": checkpoint.thread_id,
            "checkpoint_ns": checkpoint.checkpoint_ns,
            "checkpoint_id": checkpoint.checkpoint_id or None,
            "checkpoint_map": None,
        },
        "metadata": struct_to_dict(checkpoint.metadata),
        "created_at": created,
        "parent_checkpoint": checkpoint_ref_to_dict(checkpoint.parent_checkpoint)
        if checkpoint.HasField("parent_checkpoint")
        else None,
        "tasks": [_task_to_dict(task) for task in checkpoint.tasks],
        "interrupts": [interrupt_to_dict(i) for i in checkpoint.interrupts],
        "checkpoint_id": checkpoint.checkpoint_id or None,
        "thread_id": checkpoint.thread_id,
        "run_id": checkpoint.run_id or None,
        "step": checkpoint.step,
        "source": cast(CheckpointSource, CHECKPOINT_SOURCE.decode(source)) if source else None,
        "create_time": created,
    }


def event_part(event: run_pb2.RunEvent) -> StreamPart:
    """Converts a RunEvent into a `StreamPart`; a `values` event's data may come as JSON text
    (the transport asks for it), decoded to the same value."""
    if event.data_json:
        return StreamPart(event.event, orjson.loads(event.data_json), event.seq)
    return StreamPart(event.event, value_to_python(event.data), event.seq)


def event_parts(events: Iterable[run_pb2.RunEvent]) -> list[StreamPart]:
    """Converts a batch of RunEvents into one `StreamPart` each, in order."""
    return [event_part(event) for event in events]


def thread_event_part(event: thread_service_pb2.ThreadEvent) -> ThreadStreamPart | None:
    """Converts a ThreadEvent into a `ThreadStreamPart`; `None` for a kind this SDK predates."""
    kind = event.WhichOneof("kind")
    if kind == "run_event":
        inner = event.run_event
        return ThreadStreamPart(
            inner.event, value_to_python(inner.data), event.seq, inner.run_id, inner.seq
        )
    if kind == "run_started":
        return ThreadStreamPart(
            kind, run_to_dict(event.run_started), event.seq, event.run_started.run_id, 0
        )
    if kind == "run_ended":
        return ThreadStreamPart(
            kind, run_to_dict(event.run_ended), event.seq, event.run_ended.run_id, 0
        )
    return None


# --- derived: the Run dict, the admission requests' fields -------------------------------

CONVERSIONS = Conversions(
    enums={
        codec.enum_name: codec
        for codec in (
            MULTITASK_STRATEGY,
            RUN_STATUS,
            THREAD_STATUS,
            STREAM_MODE,
            CANCEL_ACTION,
            IF_NOT_EXISTS,
            IF_EXISTS,
            ON_DISCONNECT,
            DURABILITY,
            ON_PENDING_INTERRUPT,
            INTERRUPTION,
            CHECKPOINT_SOURCE,
        )
    },
    decoders={
        "google.protobuf.Timestamp": iso,
        "google.protobuf.Struct": struct_to_dict,
        "turnstile.v1.Command": command_to_dict,
    },
    encoders={
        "google.protobuf.Struct": to_struct,
        "turnstile.v1.Command": lambda command, _what: command_message(command),
    },
    unspecified=UNSPECIFIED,
)
"""The SDK's enum strings and message conversions, for the fields derived in `_fields`."""
_read_run = dict_reader(run_pb2.Run.DESCRIPTOR, Run, CONVERSIONS)
