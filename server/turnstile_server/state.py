"""Thread state: validating run inputs and graph updates, and merging them into values."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from turnstile_server.errors import InvalidInput, StateTooLarge
from turnstile_server.ids import random_id
from turnstile_server.json_size import entry_size, field_size, list_entry_size, value_size

# Protobuf decoders (upb, C++, Java) refuse messages nested more than 100 deep, and a level of
# JSON object costs three (Struct, map entry, Value): a request with JSON nested past about 32
# levels cannot be decoded at all, and what we accept comes back a few messages deeper (a watch's
# `values` event sits in WatchThreadResponse, ThreadEvent, RunEvent, Value), where it must still
# decode; 20 leaves room for that. Inputs and graphs' updates alike.
MAX_JSON_DEPTH = 20

MESSAGES = "messages"

# Sequences that are not JSON arrays.
_NOT_LISTS = (str, bytes, bytearray, memoryview)

_ROLES: dict[str, str] = {
    "human": "human",
    "user": "human",
    "ai": "ai",
    "assistant": "ai",
    "tool": "tool",
    "system": "system",
}


class ThreadState:
    """A thread's values plus an index of message ids, so an update costs O(update).

    `size` is the values' encoded size (a `Struct`, as answers carry them), measured once on
    first use and then kept by each update at the cost of the update: the limit on a thread's
    state (`apply`'s `limit`) is checked without encoding the state again."""

    __slots__ = ("__weakref__", "_entries", "_index", "_items", "replaced", "values")

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = dict(values or {})
        self._index: dict[str, int] = {}
        # How many times a stored message was replaced: while it stays the same, messages were
        # only appended, so whoever encoded the first n may reuse that (the API layer's codec).
        self.replaced = 0
        # Once measured: each key's encoded entry but `messages`', and its items' bytes.
        self._entries: dict[str, int] | None = None
        self._items = 0
        if MESSAGES in self.values:
            messages = _message_list(self.values[MESSAGES], "values.messages")
            self.values[MESSAGES] = list(messages)
            for position, message in enumerate(messages):
                message_id = message.get("id")
                if isinstance(message_id, str):
                    self._index[message_id] = position

    @property
    def size(self) -> int:
        """The values' encoded size in bytes (the body of a `google.protobuf.Struct`)."""
        entries = self._measured()
        total = sum(entries.values())
        if MESSAGES in self.values:
            total += list_entry_size(MESSAGES, self._items)
        return total

    def measure(self) -> None:
        """Measures the values now, if not yet: its copies and later applies keep the size."""
        self._measured()

    def apply(self, update: Mapping[str, Any], *, limit: int | None = None) -> None:
        """Merge one update: `messages` appends or replaces by id, other keys overwrite.

        With `limit`, an update that would make the values larger than `limit` bytes raises
        `StateTooLarge` and changes nothing."""
        if limit is None:
            self._merge(update, sized=self._entries is not None)
            return
        grown, items, entries = self._size_after(update)
        if grown > limit:
            raise StateTooLarge(grown, limit)
        self._merge(update, sized=False)  # measured already
        self._measured().update(entries)
        self._items = items

    def _merge(self, update: Mapping[str, Any], *, sized: bool) -> None:
        for key, value in update.items():
            if key == MESSAGES:
                self._merge_messages(_message_list(value, "update.messages"), sized=sized)
            else:
                self.values[key] = value
                if sized:
                    self._measured()[key] = entry_size(key, value)

    def snapshot(self) -> dict[str, Any]:
        """Return a copy of the values that later applies leave untouched."""
        values = dict(self.values)
        if MESSAGES in values:
            values[MESSAGES] = list(values[MESSAGES])
        return values

    def copy(self) -> ThreadState:
        """Return an independent state with the same values."""
        clone = ThreadState.__new__(ThreadState)
        clone.values = self.snapshot()
        clone._index = dict(self._index)
        clone.replaced = self.replaced
        clone._entries = None if self._entries is None else dict(self._entries)
        clone._items = self._items
        return clone

    def _measured(self) -> dict[str, int]:
        if self._entries is None:
            self._entries = {
                key: entry_size(key, value) for key, value in self.values.items() if key != MESSAGES
            }
            self._items = sum(_item_size(m) for m in self.values.get(MESSAGES, ()))
        return self._entries

    def _size_after(self, update: Mapping[str, Any]) -> tuple[int, int, dict[str, int]]:
        """What `size` would be once `update` is applied, at the cost of the update, with the
        messages' items' bytes and the other keys' entries then."""
        entries = self._measured()
        total = sum(entries.values())
        items, has_messages = self._items, MESSAGES in self.values
        changed: dict[str, int] = {}
        for key, value in update.items():
            if key != MESSAGES:
                changed[key] = entry_size(key, value)
                total += changed[key] - entries.get(key, 0)
                continue
            has_messages = True
            messages: list[Any] = self.values.get(MESSAGES, [])
            replacing: dict[str, int] = {}  # this update's own sizes, by message id
            for message in _message_list(value, "update.messages"):
                message_id = message.get("id")
                size = _item_size(message)
                if isinstance(message_id, str) and message_id in replacing:
                    items -= replacing[message_id]
                elif isinstance(message_id, str) and message_id in self._index:
                    items -= _item_size(messages[self._index[message_id]])
                if isinstance(message_id, str):
                    replacing[message_id] = size
                items += size
        if has_messages:
            total += list_entry_size(MESSAGES, items)
        return total, items, changed

    def _merge_messages(self, incoming: list[Mapping[str, Any]], *, sized: bool) -> None:
        messages: list[dict[str, Any]] = self.values.setdefault(MESSAGES, [])
        measured = sized
        for message in incoming:
            stored = dict(message)
            message_id = stored.get("id")
            position = self._index.get(message_id) if isinstance(message_id, str) else None
            if measured:
                self._items += _item_size(stored)
            if position is None:
                if isinstance(message_id, str):
                    self._index[message_id] = len(messages)
                messages.append(stored)
            else:
                if measured:
                    self._items -= _item_size(messages[position])
                messages[position] = stored
                self.replaced += 1


def _item_size(message: Any) -> int:
    """A message's bytes as an item of the `messages` list."""
    return field_size(value_size(message))


def fold(updates: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Apply updates in order to an empty state and return its values."""
    state = ThreadState()
    for update in updates:
        state.apply(update)
    return state.values


def normalize_input(input: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a run's input and return the update it makes to the thread's state."""
    if input is None:
        return {}
    return _normalize(input, "input")


def normalize_update(update: Any) -> dict[str, Any]:
    """Validate what a graph step yielded and return it as a state update.

    Held to what a client may send (`MAX_JSON_DEPTH`): an update nested deeper would be
    stored, then answered in messages no client can decode.
    """
    normalized = _normalize(update, "update")
    if nests_deeper(normalized):
        raise InvalidInput(f"update: objects and lists nest more than {MAX_JSON_DEPTH} levels deep")
    return normalized


def check_event_depth(event: str, data: Any) -> None:
    """Refuses an event's data nested past `MAX_JSON_DEPTH`: no client could decode the stream
    past it."""
    if nests_deeper(data):
        raise InvalidInput(
            f"{event} event: objects and lists nest more than {MAX_JSON_DEPTH} levels deep"
        )


def nests_deeper(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the objects and lists of `value` (itself at level 1) nest past `limit`."""
    if not isinstance(value, Mapping | list | tuple):
        return False
    # A stack, not recursion: a graph's value may nest past Python's recursion limit.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, Mapping) else item
        stack.extend(
            (child, depth + 1) for child in children if isinstance(child, Mapping | list | tuple)
        )
    return False


def new_message_id() -> str:
    """Return a fresh message id (a random UUID)."""
    return random_id()


def _normalize(data: Any, path: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{path}: must be an object, got {_kind(data)}")
    result: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise InvalidInput(f"{path}: keys must be strings, got {_kind(key)}")
        if key == MESSAGES:
            result[key] = _normalize_messages(value, f"{path}.{key}")
        else:
            result[key] = _json_value(value, f"{path}.{key}")
    return result


def _normalize_messages(value: Any, path: str) -> list[dict[str, Any]]:
    if isinstance(value, Mapping):
        return [_normalize_message(value, f"{path}[0]")]
    if not _is_list(value):
        raise InvalidInput(f"{path}: must be a list of messages, got {_kind(value)}")
    return [_normalize_message(item, f"{path}[{i}]") for i, item in enumerate(value)]


def _normalize_message(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{path}: a message must be an object, got {_kind(value)}")
    message_type = _message_type(value, path)

    if "content" not in value:
        raise InvalidInput(f"{path}.content: missing")
    content = value["content"]
    if _is_list(content):
        for i, block in enumerate(content):
            if not isinstance(block, str | Mapping):
                raise InvalidInput(
                    f"{path}.content[{i}]: must be a string or an object, got {_kind(block)}"
                )
    elif not isinstance(content, str):
        raise InvalidInput(f"{path}.content: must be a string or a list, got {_kind(content)}")

    message_id = value.get("id")
    if message_id is None:
        message_id = new_message_id()
    elif not isinstance(message_id, str) or not message_id:
        raise InvalidInput(f"{path}.id: must be a non-empty string, got {_kind(message_id)}")

    message: dict[str, Any] = {
        "type": message_type,
        "content": _json_value(content, f"{path}.content"),
        "id": message_id,
    }
    for key in ("name", "tool_call_id"):
        if value.get(key) is not None:
            if not isinstance(value[key], str):
                raise InvalidInput(f"{path}.{key}: must be a string, got {_kind(value[key])}")
            message[key] = value[key]
    if message_type == "tool" and "tool_call_id" not in message:
        raise InvalidInput(f"{path}.tool_call_id: missing; a tool message answers a tool call")
    if value.get("tool_calls") is not None:
        message["tool_calls"] = _normalize_tool_calls(value["tool_calls"], f"{path}.tool_calls")
    for key, item in value.items():
        if key not in message and key not in ("role", "type", "tool_calls"):
            if not isinstance(key, str):
                raise InvalidInput(f"{path}: keys must be strings, got {_kind(key)}")
            message[key] = _json_value(item, f"{path}.{key}")
    return message


def _message_type(value: Mapping[str, Any], path: str) -> str:
    resolved: list[tuple[str, str]] = []
    for key in ("role", "type"):
        given = value.get(key)
        if given is None:
            continue
        if not isinstance(given, str):
            raise InvalidInput(f"{path}.{key}: must be a string, got {_kind(given)}")
        if given not in _ROLES:
            raise InvalidInput(f"{path}.{key}: unknown role {given!r}")
        resolved.append((key, _ROLES[given]))
    if not resolved:
        raise InvalidInput(f"{path}: missing role (or type)")
    if len(resolved) == 2 and resolved[0][1] != resolved[1][1]:
        raise InvalidInput(f"{path}: role {value['role']!r} and type {value['type']!r} disagree")
    return resolved[0][1]


def _normalize_tool_calls(value: Any, path: str) -> list[dict[str, Any]]:
    if not _is_list(value):
        raise InvalidInput(f"{path}: must be a list, got {_kind(value)}")
    calls: list[dict[str, Any]] = []
    for i, call in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(call, Mapping):
            raise InvalidInput(f"{where}: a tool call must be an object, got {_kind(call)}")
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{where}.name: must be a non-empty string, got {_kind(name)}")
        args = call.get("args", {})
        if not isinstance(args, Mapping):
            raise InvalidInput(f"{where}.args: must be an object, got {_kind(args)}")
        call_id = call.get("id")
        if call_id is None:
            call_id = f"call_{uuid.uuid4().hex}"
        elif not isinstance(call_id, str) or not call_id:
            raise InvalidInput(f"{where}.id: must be a non-empty string, got {_kind(call_id)}")
        normalized: dict[str, Any] = _json_value(call, where)
        normalized["args"] = normalized.get("args", {})
        normalized["id"] = call_id
        normalized.setdefault("type", "tool_call")
        calls.append(normalized)
    return calls


def _message_list(value: Any, path: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise InvalidInput(f"{path}: must be a list of messages, got {_kind(value)}")
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise InvalidInput(f"{path}[{i}]: a message must be an object, got {_kind(message)}")
    return value


def json_copy(value: Any, path: str) -> Any:
    """Return a JSON-only copy of value (tuples and read-only views become lists and dicts);
    InvalidInput naming the first part that is not JSON."""
    return _json_value(value, path)


def _json_value(value: Any, path: str) -> Any:
    """Return a JSON-only copy of value (tuples become lists) or raise naming the bad path."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{path}: {value} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{path}: keys must be strings, got {_kind(key)}")
            copied[key] = _json_value(item, f"{path}.{key}")
        return copied
    if _is_list(value):
        return [_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise InvalidInput(f"{path}: {_kind(value)} is not JSON")


def _is_list(value: Any) -> bool:
    """Tell whether value is a JSON array: a list or tuple, or a read-only view of one (a
    graph may yield parts of the state it was handed)."""
    if isinstance(value, list | tuple):
        return True
    return isinstance(value, Sequence) and not isinstance(value, _NOT_LISTS)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"string {value[:40]!r}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__
