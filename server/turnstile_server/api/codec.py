"""Protobuf wire bytes written directly, for what the server sends most: events and values.

`google.protobuf.Value`/`Struct` built field by field cost a call into protobuf per JSON node;
writing their wire format here costs a few bytes operations per node, and a stream response is
the concatenation of its framed events, so an event is encoded once for every subscriber. What
is encoded is kept only where it is reused: a thread's messages (each encoded once, and a
state's list only from where its last encoding left off). Everything else the server sends,
thread events included, goes through protobuf's own encoder.
"""

from __future__ import annotations

import math
import struct
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from turnstile.v1 import run_pb2, thread_service_pb2
from turnstile_server.state import MESSAGES, ThreadState

_DOUBLE = struct.Struct("<d")
_NULL = b"\x08\x00"  # Value.null_value (1) = NULL_VALUE
_TRUE = b"\x20\x01"  # Value.bool_value (4)
_FALSE = b"\x20\x00"
_EMPTY_STRUCT = b"\x2a\x00"  # Value.struct_value (5), no fields
_EMPTY_LIST = b"\x32\x00"  # Value.list_value (6), no values

# The tag and length of a length-delimited field shorter than 128 bytes, by tag then length:
# most fields are, and one concatenation with a prebuilt head is the cheapest way to write one.
_HEADS = {tag: [bytes((tag, n)) for n in range(0x80)] for tag in range(0x0A, 0x80, 8)}
_ENTRY = _HEADS[0x0A]  # Struct.fields entries, ListValue.values items, map entry keys (1)
_ENTRY_VALUE = _HEADS[0x12]  # a map entry's value (2)
_STRING = _HEADS[0x1A]  # Value.string_value (3)


def varint(number: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    if number < 0x80:
        return bytes((number,))
    if number < 0x4000:
        return bytes(((number & 0x7F) | 0x80, number >> 7))
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte (field number < 16), length, payload."""
    n = len(payload)
    if n < 0x80:
        return _HEADS[tag][n] + payload
    return bytes((tag,)) + varint(n) + payload


class _NotJson(Exception):
    """`data` holds something JSON cannot carry; `where` is filled in on the way out."""

    def __init__(self, error: type[Exception], what: str) -> None:
        super().__init__(what)
        self.error = error
        self.what = what
        self.where: list[str] = []  # path segments, innermost first

    def raised(self, path: str) -> Exception:
        """The TypeError or ValueError to raise, naming where in `path` the value is."""
        return self.error(f"{path}{''.join(reversed(self.where))}: {self.what}")


def value(data: Any, path: str = "data", *, state: bool = False) -> bytes:
    """JSON data as an encoded `google.protobuf.Value`; refuses what JSON cannot carry (NaN,
    non-string keys, other types). `state`: `data` holds a thread state's messages (never
    changed once stored), which may be encoded once and reused."""
    try:
        if state and isinstance(data, Mapping):
            return field(0x2A, _struct(data, _message_items)) if data else _EMPTY_STRUCT
        return _value(data)
    except _NotJson as exc:
        raise exc.raised(path) from None


def struct_body(data: Mapping[str, Any], path: str = "data", *, state: bool = False) -> bytes:
    """A JSON object as the body of a `google.protobuf.Struct` (its `fields` map, field 1)."""
    try:
        return _struct(data, _message_items if state else None)
    except _NotJson as exc:
        raise exc.raised(path) from None


def state_body(state: ThreadState) -> bytes:
    """A thread state's values as the body of a `google.protobuf.Struct`, like `struct_body`
    with `state`, but its messages list encoded only from where the last call left off."""
    return b"".join(state_parts(state))


def state_parts(state: ThreadState) -> list[bytes]:
    """`state_body` in pieces, to be joined once into whatever carries it: a long thread's
    encoded messages (megabytes) are then copied once per answer, not once per enclosing
    field."""
    parts: list[bytes] = []
    try:
        for key, item in state.values.items():
            if key == MESSAGES and isinstance(item, list) and item:
                items = _state_messages(state, item)
                # A map entry: key (1); value (2), a Value whose list_value (6) holds the items.
                key_head, list_head = _key(key), b"\x32" + varint(len(items))
                value_head = b"\x12" + varint(len(list_head) + len(items))
                entry = len(key_head) + len(value_head) + len(list_head) + len(items)
                parts += (b"\x0a" + varint(entry) + key_head + value_head + list_head, items)
            else:
                parts.append(_struct({key: item}, None))
    except _NotJson as exc:
        raise exc.raised("values") from None
    return parts


@dataclass(frozen=True, slots=True)
class _Encoded:
    """What was encoded of a state's messages: the first `count` items of `messages`, while
    `replaced` was the state's count of replaced messages."""

    messages: list[Any]
    replaced: int
    count: int
    items: bytes


_ENCODED: weakref.WeakKeyDictionary[ThreadState, _Encoded] = weakref.WeakKeyDictionary()
"""By thread state, dropped with it: a long thread's answers then encode only new messages."""


def encoded_messages(state: ThreadState) -> int:
    """How many of the state's messages its next encoding reuses, encoded before."""
    known = _ENCODED.get(state)
    messages = state.values.get(MESSAGES)
    if known is None or not _reusable(known, state, messages):
        return 0
    return known.count


def _reusable(known: _Encoded, state: ThreadState, messages: Any) -> bool:
    """Whether `known` still holds the first messages: the same list, only appended to."""
    return (
        known.messages is messages
        and known.replaced == state.replaced
        and known.count <= len(messages)
    )


def _state_messages(state: ThreadState, items: list[Any]) -> bytes:
    """The state's messages as ListValue items, encoded from where the last call left off."""
    known = _ENCODED.get(state)
    count, encoded = 0, b""
    if known is not None and _reusable(known, state, items):
        count, encoded = known.count, known.items
    if count < len(items):
        try:
            encoded += _message_items(items[count:])
        except _NotJson as exc:
            exc.where.append(f".{MESSAGES}")
            raise
        _ENCODED[state] = _Encoded(items, state.replaced, len(items), encoded)
    return encoded


def _value(data: Any) -> bytes:
    """An encoded `Value`. The exact built-in types are tried first, by identity, then their
    subclasses and any other mapping."""
    kind = type(data)
    if kind is str:
        encoded: bytes = data.encode()
        n = len(encoded)
        return (_STRING[n] if n < 0x80 else b"\x1a" + varint(n)) + encoded
    if kind is dict:
        return field(0x2A, _struct(data, None)) if data else _EMPTY_STRUCT
    if kind is float or kind is int:
        return _number(data)
    if data is None:
        return _NULL
    if data is True:
        return _TRUE
    if data is False:
        return _FALSE
    if kind is list or kind is tuple:
        return _list(data)
    if isinstance(data, str):
        return field(0x1A, data.encode())
    if isinstance(data, int | float):
        return _number(data)
    if isinstance(data, Mapping):
        return field(0x2A, _struct(data, None)) if data else _EMPTY_STRUCT
    if isinstance(data, list | tuple):
        return _list(data)
    raise _NotJson(TypeError, f"a {kind.__name__} is not JSON")


def _number(data: float) -> bytes:
    if not math.isfinite(data):
        raise _NotJson(ValueError, f"{data!r} is not a JSON number")
    return b"\x11" + _DOUBLE.pack(data)  # number_value (2), a double


def _list(data: list[Any] | tuple[Any, ...]) -> bytes:
    """A non-empty list as `Value.list_value` (6); its items are `ListValue.values` (1)."""
    if not data:
        return _EMPTY_LIST
    items = []
    for index, item in enumerate(data):
        try:
            encoded = _value(item)
        except _NotJson as exc:
            exc.where.append(f"[{index}]")
            raise
        n = len(encoded)
        items.append((_ENTRY[n] if n < 0x80 else b"\x0a" + varint(n)) + encoded)
    return field(0x32, b"".join(items))


def _struct(data: Mapping[str, Any], messages: Callable[[list[Any]], bytes] | None) -> bytes:
    """The body of a Struct; `messages`, if given, encodes a non-empty `messages` list's items
    (a thread state's, never changed once stored)."""
    entries = []
    for key, item in data.items():
        head = _key(key)
        try:
            if messages is not None and key == MESSAGES and isinstance(item, list) and item:
                encoded = field(0x32, messages(item))  # list_value (6)
            else:
                encoded = _value(item)
        except _NotJson as exc:
            exc.where.append(f".{key}")
            raise
        # A map entry: key (1), value (2).
        n = len(encoded)
        entry = head + (_ENTRY_VALUE[n] if n < 0x80 else b"\x12" + varint(n)) + encoded
        n = len(entry)
        entries.append((_ENTRY[n] if n < 0x80 else b"\x0a" + varint(n)) + entry)
    return b"".join(entries)


def _key(key: Any) -> bytes:
    """A map entry's key field (1)."""
    if not isinstance(key, str):
        raise _NotJson(TypeError, f"key {key!r} is not a string")
    return field(0x0A, key.encode())


def _message_items(items: list[Any]) -> bytes:
    """Messages as the items of a ListValue (`values`, field 1), each encoded once."""
    return b"".join([field(0x0A, _message(m)) for m in items])


class _Messages:
    """Encoded messages by identity, the newest `size` kept.

    A thread's state never changes a stored message (an update replaces it with a new one),
    and every values snapshot and answer shares those objects: so a message is encoded once,
    not once per step and per answer. An entry holds its message, so its id cannot be reused.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[int, tuple[Any, bytes]] = OrderedDict()

    def get(self, message: Any) -> bytes:
        key = id(message)
        entry = self.entries.get(key)
        if entry is not None and entry[0] is message:
            self.entries.move_to_end(key)
            return entry[1]
        try:
            encoded = _value(message)
        except _NotJson as exc:
            exc.where.append(".messages[]")
            raise
        self.entries[key] = (message, encoded)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return encoded


_MESSAGES = _Messages(32_768)


def _message(message: Any) -> bytes:
    return _MESSAGES.get(message) if isinstance(message, dict) else _value(message)


def run_event(seq: int, run_id: str, event: str, data: Any, *, state: bool = False) -> bytes:
    """An encoded `RunEvent`: seq (1), run_id (2), event (3), data (4); `state` as for
    `value`."""
    parts = [field(0x12, run_id.encode()), field(0x1A, event.encode())]
    parts.append(field(0x22, value(data, state=state)))
    return b"".join([b"\x08", varint(seq), *parts] if seq else parts)


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
    """Encodes and frames one `ThreadEvent`, by protobuf; `run_event` is an encoded `RunEvent`,
    embedded (field 3, after protobuf's encoding of seq, field 1) without decoding."""
    message = thread_service_pb2.ThreadEvent(seq=seq, run_started=run_started, run_ended=run_ended)
    body = message.SerializeToString()
    if run_event is not None:
        body += field(0x1A, run_event)
    return frame(body)
