"""Conversions between protobuf messages and the store's records, validating on the way in."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf import struct_pb2, timestamp_pb2

from turnstile.v1 import assistant_pb2, run_pb2, thread_pb2
from turnstile_server.api import codec
from turnstile_server.errors import InvalidArgument, StateTooLarge
from turnstile_server.state import MAX_JSON_DEPTH
from turnstile_server.store import AssistantRecord, ThreadRecord

log = logging.getLogger(__name__)

STRATEGIES = {
    run_pb2.MULTITASK_STRATEGY_UNSPECIFIED: "enqueue",
    run_pb2.MULTITASK_STRATEGY_REJECT: "reject",
    run_pb2.MULTITASK_STRATEGY_INTERRUPT: "interrupt",
    run_pb2.MULTITASK_STRATEGY_ROLLBACK: "rollback",
    run_pb2.MULTITASK_STRATEGY_ENQUEUE: "enqueue",
}
STRATEGY_ENUM = {name: number for number, name in STRATEGIES.items() if number}
RUN_STATUSES = {
    run_pb2.RUN_STATUS_PENDING: "pending",
    run_pb2.RUN_STATUS_RUNNING: "running",
    run_pb2.RUN_STATUS_SUCCESS: "success",
    run_pb2.RUN_STATUS_ERROR: "error",
    run_pb2.RUN_STATUS_TIMEOUT: "timeout",
    run_pb2.RUN_STATUS_INTERRUPTED: "interrupted",
}
RUN_STATUS_ENUM = {name: number for number, name in RUN_STATUSES.items()}
THREAD_STATUSES = {
    thread_pb2.THREAD_STATUS_IDLE: "idle",
    thread_pb2.THREAD_STATUS_BUSY: "busy",
    thread_pb2.THREAD_STATUS_INTERRUPTED: "interrupted",
    thread_pb2.THREAD_STATUS_ERROR: "error",
}
THREAD_STATUS_ENUM = {name: number for number, name in THREAD_STATUSES.items()}
STREAM_MODES = {
    run_pb2.STREAM_MODE_VALUES: "values",
    run_pb2.STREAM_MODE_UPDATES: "updates",
    run_pb2.STREAM_MODE_MESSAGES: "messages",
    run_pb2.STREAM_MODE_CUSTOM: "custom",
    run_pb2.STREAM_MODE_DEBUG: "debug",
    run_pb2.STREAM_MODE_TASKS: "tasks",
    run_pb2.STREAM_MODE_CHECKPOINTS: "checkpoints",
    run_pb2.STREAM_MODE_EVENTS: "events",
    run_pb2.STREAM_MODE_MESSAGES_PARTIAL: "messages-partial",
}
INTERRUPTIONS = {
    thread_pb2.INTERRUPTION_CANCELLED: "cancelled",
    thread_pb2.INTERRUPTION_AWAITING_INPUT: "awaiting_input",
}
INTERRUPTION_ENUM = {name: number for number, name in INTERRUPTIONS.items()}
ON_PENDING_INTERRUPT = {
    run_pb2.ON_PENDING_INTERRUPT_UNSPECIFIED: "",  # the server's default
    run_pb2.ON_PENDING_INTERRUPT_DISCARD: "discard",
    run_pb2.ON_PENDING_INTERRUPT_REJECT: "reject",
}
CANCEL_ACTIONS = {
    run_pb2.CANCEL_ACTION_UNSPECIFIED: "interrupt",
    run_pb2.CANCEL_ACTION_INTERRUPT: "interrupt",
    run_pb2.CANCEL_ACTION_ROLLBACK: "rollback",
}
IF_EXISTS = {
    assistant_pb2.IF_EXISTS_UNSPECIFIED: "raise",
    assistant_pb2.IF_EXISTS_RAISE: "raise",
    assistant_pb2.IF_EXISTS_DO_NOTHING: "do_nothing",
}
IF_NOT_EXISTS = {
    run_pb2.IF_NOT_EXISTS_UNSPECIFIED: False,
    run_pb2.IF_NOT_EXISTS_REJECT: False,
    run_pb2.IF_NOT_EXISTS_CREATE: True,
}
MAX_PAGE_SIZE = 1000
MAX_PAGE_BYTES = 4 << 20
"""What a list answer may weigh: the default receive limit of most gRPC clients (grpcurl, Go,
Java, Python's own); a page stops before the entry that would pass it, one entry always comes."""

E = TypeVar("E", bound=int)
V = TypeVar("V")


def enum_value(table: Mapping[E, V], number: E, field: str) -> V:
    """Maps an enum number through `table`, refusing numbers the contract does not define."""
    if number not in table:
        raise InvalidArgument(
            f"{field}: {number} is not a valid value", reason="INVALID_ENUM", field=field
        )
    return table[number]


def optional_enum(table: Mapping[E, V], number: E, field: str) -> V | None:
    """Like enum_value, but 0 (unspecified) means None: no filter."""
    return None if number == 0 else enum_value(table, number, field)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""What `str(uuid.UUID(...))` returns; anything else is parsed (and canonicalised) by `uuid`."""


def uuid_id(value: str, field: str, *, required: bool = True) -> str:
    """Checks that `value` is a UUID (canonical lower-case form returned)."""
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required", reason="MISSING_FIELD", field=field)
        return ""
    if _CANONICAL_UUID.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(
            f"{field}: {value[:80]!r} is not a UUID", reason="INVALID_ID", field=field
        ) from None


MAX_SECONDS = 366 * 24 * 3600.0


def seconds(value: float, field: str) -> float:
    """Checks a non-negative, finite number of seconds, at most a year."""
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise InvalidArgument(
            f"{field} must be a number of seconds from 0 to {MAX_SECONDS:.0f}",
            reason="INVALID_NUMBER",
            field=field,
        )
    return value


def page(page_size: int, page_token: str, *, default: int) -> tuple[int, int | None]:
    """Validates paging fields; returns the limit and the decoded cursor."""
    if page_size < 0:
        raise InvalidArgument("page_size must be >= 0", reason="INVALID_NUMBER", field="page_size")
    limit = min(page_size or default, MAX_PAGE_SIZE)
    if not page_token:
        return limit, None
    try:
        text = base64.urlsafe_b64decode(page_token.encode()).decode()
        prefix, cursor = text.split(":", 1)
        number = int(cursor)
        if prefix != "c1" or not 0 <= number < 2**63:
            raise ValueError(prefix)
        return limit, number
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            "page_token is not a token this server issued",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        ) from None


class AnswerBytes:
    """The largest answer the server sends (`max_answer_bytes`, gRPC's send limit): a thread
    whose state an answer cannot carry (stored before `--max-state-bytes` held it) is refused
    with StateTooLarge, saying so, instead of failing in gRPC as it is sent."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def check_state(self, size: int, thread_id: str) -> None:
        """Refuses values of `size` encoded bytes, before they are encoded: a sixteenth of the
        answer is left for what it carries beside them (the thread's fields, a checkpoint's)."""
        if size > self.limit - self.limit // 16:
            raise self._refusal(size, thread_id)

    def checked(self, message: Any, thread_id: str) -> Any:
        """`message`, once it is known to fit (LangGraph values, encoded already)."""
        size = message.ByteSize()
        if size > self.limit - self.limit // 16:
            raise self._refusal(size, thread_id)
        return message

    def fits(self, message: Any, thread_id: str) -> int | None:
        """A list entry's encoded size, or None when no answer carries it (logged: the list
        leaves it out)."""
        size: int = message.ByteSize()
        if size > self.limit - self.limit // 16:
            log.warning("a list leaves out %s", self._refusal(size, thread_id))
            return None
        return size

    def _refusal(self, size: int, thread_id: str) -> StateTooLarge:
        return StateTooLarge(
            size,
            self.limit,
            thread_id,
            what=f"thread {thread_id}'s state takes {size} bytes, more than an answer carries",
            setting="max_answer_bytes, TURNSTILE_MAX_ANSWER_BYTES",
        )


class PageBytes:
    """A list answer's encoded size so far, against its byte cap (see `MAX_PAGE_BYTES`)."""

    __slots__ = ("_left", "taken")

    def __init__(self, limit: int) -> None:
        self._left = limit
        self.taken = 0

    def take(self, message: Any, size: int | None = None) -> bool:
        """Counts `message` (of `size` encoded bytes, if known) in, unless it would pass the
        cap; the first one always fits."""
        size = (message.ByteSize() if size is None else size) + 6  # with its tag and length
        if self.taken and size > self._left:
            return False
        self._left -= size
        self.taken += 1
        return True


def next_token(cursor: int | None) -> str:
    """Encodes a cursor as an opaque page token ('' for the last page)."""
    return "" if cursor is None else base64.urlsafe_b64encode(f"c1:{cursor}".encode()).decode()


def metadata(struct: struct_pb2.Struct, field: str = "metadata") -> dict[str, Any]:
    """`to_dict` for metadata, stored or filtered on: a key may not contain NUL, which
    SQLite's JSON functions take as the end of a key (`a<NUL>b` would match a filter on `a`)."""
    values = to_dict(struct, field)
    for key in values:
        if "\x00" in key:
            raise InvalidArgument(
                f"{field}: key {key!r} contains NUL, which metadata keys may not",
                reason="INVALID_METADATA_KEY",
                field=field,
            )
    return values


def to_dict(struct: struct_pb2.Struct, field: str = "") -> dict[str, Any]:
    """Converts a Struct to a plain dict, as protobuf's `MessageToDict` does (numbers are
    floats); refuses NaN and infinities (JSON has neither) and objects and lists nested more
    than `MAX_JSON_DEPTH` deep."""
    try:
        return _object(struct, 1)
    except _TooDeep:
        raise InvalidArgument(
            f"{field or 'a JSON field'}: objects and lists nest more than {MAX_JSON_DEPTH}"
            " levels deep",
            reason="INVALID_INPUT",
            field=field or None,
        ) from None
    except ValueError as exc:
        raise InvalidArgument(
            f"{field or 'a JSON field'}: {exc}", reason="INVALID_INPUT", field=field or None
        ) from None


class _TooDeep(Exception):
    """JSON nested deeper than MAX_JSON_DEPTH."""


def _object(struct: struct_pb2.Struct, depth: int) -> dict[str, Any]:
    """A Struct at nesting `depth` (1 for the outermost object) as a dict."""
    if depth > MAX_JSON_DEPTH:
        raise _TooDeep
    fields = struct.fields  # keys then lookups: the map's `items()` iterates in Python
    return {key: _value(fields[key], depth) for key in fields}


def _value(value: struct_pb2.Value, depth: int) -> Any:
    """A Value inside a container at nesting `depth`."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if math.isinf(number) or math.isnan(number):
            raise ValueError(
                f"Fail to serialize {'NaN' if math.isnan(number) else 'Infinity'} for"
                " Value.number_value, which would parse as string_value"
            )
        return number
    if kind == "struct_value":
        return _object(value.struct_value, depth + 1)
    if kind == "list_value":
        if depth + 1 > MAX_JSON_DEPTH:
            raise _TooDeep
        return [_value(item, depth + 1) for item in value.list_value.values]
    if kind == "bool_value":
        return value.bool_value
    return None  # null_value, or no kind set


def to_struct(values: dict[str, Any] | None, *, state: bool = False) -> struct_pb2.Struct:
    """Converts a JSON dict to a Struct (encoded directly, then parsed by protobuf's C core);
    `state`: a thread's values, whose messages may be encoded once and reused."""
    if not values:
        return struct_pb2.Struct()
    return struct_pb2.Struct.FromString(codec.struct_body(values, "values", state=state))


def timestamp(micros: int | None) -> timestamp_pb2.Timestamp | None:
    """Converts microseconds since the epoch to a Timestamp (None stays unset)."""
    if micros is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def to_value(data: Any) -> struct_pb2.Value:
    """JSON data as a `Value`."""
    return struct_pb2.Value.FromString(codec.value(data))


def from_value(value: struct_pb2.Value, field: str) -> Any:
    """A `Value` as plain JSON data, refused as `to_dict` refuses a Struct's."""
    wrapper = struct_pb2.Struct()
    wrapper.fields["v"].CopyFrom(value)
    return to_dict(wrapper, field)["v"]


def thread_message(thread: ThreadRecord, values: dict[str, Any]) -> thread_pb2.Thread:
    """Converts a thread record and its current values to the wire form."""
    return thread_pb2.Thread(
        thread_id=thread.thread_id,
        metadata=to_struct(thread.metadata),
        status=THREAD_STATUS_ENUM[thread.status],
        values=to_struct(values, state=True),
        create_time=timestamp(thread.create_time),
        update_time=timestamp(thread.update_time),
        interrupts=[interrupt_message(i) for i in thread.interrupts or ()]
        if thread.interruption == "awaiting_input"
        else [],
        interruption=INTERRUPTION_ENUM.get(
            thread.interruption, thread_pb2.INTERRUPTION_UNSPECIFIED
        ),
    )


def interrupt_message(interrupt: Mapping[str, Any]) -> thread_pb2.Interrupt:
    """A pending interrupt `{id, value, task_id}` as its wire form."""
    return thread_pb2.Interrupt(
        id=str(interrupt.get("id", "")),
        value=to_value(interrupt.get("value")),
        task_id=str(interrupt.get("task_id", "")),
    )


def assistant_message(assistant: AssistantRecord) -> assistant_pb2.Assistant:
    """Converts an assistant record to the wire form."""
    return assistant_pb2.Assistant(
        assistant_id=assistant.assistant_id,
        graph_id=assistant.graph_id,
        name=assistant.name,
        config=to_struct(assistant.config),
        metadata=to_struct(assistant.metadata),
        create_time=timestamp(assistant.create_time),
        update_time=timestamp(assistant.update_time),
    )


DURABILITIES = {
    run_pb2.DURABILITY_UNSPECIFIED: "",  # the server's default
    run_pb2.DURABILITY_SYNC: "sync",
    run_pb2.DURABILITY_ASYNC: "async",
    run_pb2.DURABILITY_EXIT: "exit",
}
ON_DISCONNECT = {
    run_pb2.ON_DISCONNECT_UNSPECIFIED: "continue",
    run_pb2.ON_DISCONNECT_CONTINUE: "continue",
    run_pb2.ON_DISCONNECT_CANCEL: "cancel",
}
