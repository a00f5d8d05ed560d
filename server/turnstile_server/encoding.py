"""Protobuf wire bytes written directly, for what the server sends most: events and values.

`google.protobuf.Value`/`Struct` built field by field cost a call into protobuf per JSON node;
writing their wire format here costs a few bytes operations per node, and a stream response is
the concatenation of its framed events, so an event is encoded once for every subscriber.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from turnstile.v1 import run_pb2
from turnstile_server.state import MESSAGES, ThreadState

_DOUBLE = struct.Struct("<d")
_NULL = b"\x08\x00"  # Value.null_value (1) = NULL_VALUE
_TRUE = b"\x20\x01"  # Value.bool_value (4)
_FALSE = b"\x20\x00"
_EMPTY_STRUCT = b"\x2a\x00"  # Value.struct_value (5), no fields
_EMPTY_LIST = b"\x32\x00"  # Value.list_value (6), no values


def varint(number: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if number < 0x80:
        return bytes((number,))
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte (field number < 16), length, payload."""
    return bytes((tag,)) + varint(len(payload)) + payload


def value(data: Any, path: str = "data", *, state: bool = False) -> bytes:
    """JSON data as an encoded `google.protobuf.Value`; refuses what JSON cannot carry (NaN,
    non-string keys, other types). `state`: `data` holds a thread state's messages (never
    changed once stored), which may be encoded once and reused."""
    if data is None:
        return _NULL
    if isinstance(data, str):
        return field(0x1A, data.encode())  # string_value (3)
    if data is True:
        return _TRUE
    if data is False:
        return _FALSE
    if isinstance(data, int | float):
        if not math.isfinite(data):
            raise ValueError(f"{path}: {data!r} is not a JSON number")
        return b"\x11" + _DOUBLE.pack(data)  # number_value (2), a double
    if isinstance(data, Mapping):
        return field(0x2A, struct_body(data, path, state=state)) if data else _EMPTY_STRUCT
    if isinstance(data, list | tuple):
        if not data:
            return _EMPTY_LIST
        items = [field(0x0A, value(item, f"{path}[{i}]")) for i, item in enumerate(data)]
        return field(0x32, b"".join(items))  # list_value (6): ListValue.values (1)
    raise TypeError(f"{path}: a {type(data).__name__} is not JSON")


def struct_body(data: Mapping[str, Any], path: str = "data", *, state: bool = False) -> bytes:
    """A JSON object as the body of a `google.protobuf.Struct` (its `fields` map, field 1)."""
    return _struct(data, path, _message_items if state else None)


def state_body(state: ThreadState) -> bytes:
    """A thread state's values as the body of a `google.protobuf.Struct`, like `struct_body`
    with `state`, but its messages list encoded only from where the last call left off."""

    def messages(items: list[Any], path: str) -> bytes:
        count, encoded = state.encoded or (0, b"")
        if count > len(items):  # not only appended to: start over
            count, encoded = 0, b""
        if count < len(items):
            encoded += _message_items(items[count:], path)
            state.encoded = (len(items), encoded)
        return encoded

    return _struct(state.values, "values", messages)


def _struct(
    data: Mapping[str, Any], path: str, messages: Callable[[list[Any], str], bytes] | None
) -> bytes:
    """The body of a Struct; `messages`, if given, encodes a non-empty `messages` list's items
    (a thread state's, never changed once stored)."""
    entries = []
    for key, item in data.items():
        if not isinstance(key, str):
            raise TypeError(f"{path}: key {key!r} is not a string")
        if messages is not None and key == MESSAGES and isinstance(item, list) and item:
            encoded = field(0x32, messages(item, path))  # list_value (6)
        else:
            encoded = value(item, f"{path}.{key}")
        # A map entry: key (1), value (2).
        entries.append(field(0x0A, field(0x0A, key.encode()) + field(0x12, encoded)))
    return b"".join(entries)


def _message_items(items: list[Any], path: str) -> bytes:
    """Messages as the items of a ListValue (`values`, field 1), each encoded once."""
    return b"".join([field(0x0A, _message(m, path)) for m in items])


class _Messages:
    """Encoded messages by identity, the newest `size` kept.

    A thread's state never changes a stored message (an update replaces it with a new one),
    and every values snapshot and answer shares those objects: so a message is encoded once,
    not once per step and per answer. An entry holds its message, so its id cannot be reused.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[int, tuple[Any, bytes]] = OrderedDict()

    def get(self, message: Any, path: str) -> bytes:
        key = id(message)
        entry = self.entries.get(key)
        if entry is not None and entry[0] is message:
            self.entries.move_to_end(key)
            return entry[1]
        encoded = value(message, f"{path}.messages[]")
        self.entries[key] = (message, encoded)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return encoded


_MESSAGES = _Messages(32_768)


def _message(message: Any, path: str) -> bytes:
    return _MESSAGES.get(message, path) if isinstance(message, dict) else value(message, path)


def run_event(seq: int, run_id: str, event: str, data: Any, *, state: bool = False) -> bytes:
    """An encoded `RunEvent`: seq (1), run_id (2), event (3), data (4); `state` as for
    `value`."""
    head = b"\x08" + varint(seq) if seq else b""
    return (
        head + field(0x12, run_id.encode()) + field(0x1A, event.encode()) + field(0x22, value(data))
    )


EVENTS = 0x0A  # field 1, length-delimited: `events` of every stream response message


def frame(payload: bytes) -> bytes:
    """Frames an encoded event as an element of a stream response's `events` (field 1).

    Frames concatenate into the body of `StreamRunResponse`, `JoinRunStreamResponse` or
    `WatchThreadResponse`, so a batch becomes a message with one parse.
    """
    return field(EVENTS, payload)


def unframe(framed: bytes) -> bytes:
    """The encoded event inside a frame."""
    index = 1
    while framed[index] & 0x80:
        index += 1
    return framed[index + 1 :]


def thread_event_frame(
    seq: int,
    *,
    run_started: run_pb2.Run | None = None,
    run_event: bytes | None = None,
    run_ended: run_pb2.Run | None = None,
) -> bytes:
    """Encodes and frames one `ThreadEvent` (fields: seq 1, run_started 2, run_event 3,
    run_ended 4); `run_event` is an encoded `RunEvent`, embedded without decoding."""
    body = b"\x08" + varint(seq)
    if run_started is not None:
        body += field(0x12, run_started.SerializeToString())
    elif run_event is not None:
        body += field(0x1A, run_event)
    elif run_ended is not None:
        body += field(0x22, run_ended.SerializeToString())
    return frame(body)
