"""Thread values as JSON text, for callers that ask for it instead of `google.protobuf.Struct`.

A caller sends the metadata `turnstile-values-encoding: json`; responses then carry the values
in their `values_json` field (a `values` event its `data_json`). grpcurl and `buf curl` send no
such key and keep getting a `Struct` they can print as plain JSON. A JSON parser in C decodes a
long thread's values many times faster than a client can walk a parsed `Struct` node by node.

The text carries what the `Struct` would: every number is a double, so integers are written as
floats (`5.0`) and a parser that keeps integers apart still gives the same values.
"""

from __future__ import annotations

import math
import operator
from array import array
from collections import OrderedDict
from collections.abc import Mapping
from itertools import islice
from typing import Any

import orjson

from turnstile_server.api import codec
from turnstile_server.state import MESSAGES, ThreadState

HEADER = "turnstile-values-encoding"
JSON = "json"


def wants_json(context: Any) -> bool:
    """Whether the call's metadata asks for values as JSON text."""
    for key, value in context.invocation_metadata() or ():
        if key == HEADER:
            return bool(value == JSON)
    return False


def values_json(values: Mapping[str, Any]) -> bytes:
    """A JSON object's text, in its own order; a `messages` list is encoded as `_PREFIXES`
    says (a thread's messages are never changed once stored, only replaced)."""
    if not values:
        return b"{}"
    parts: list[bytes] = []
    for key, item in values.items():
        parts += (b",", orjson.dumps(_key(key)), b":")
        if key == MESSAGES and isinstance(item, list) and item:
            parts += (b"[", _PREFIXES.get(item), b"]")
        else:
            parts.append(orjson.dumps(_doubles(item)))
    parts[0] = b"{"
    parts.append(b"}")
    return b"".join(parts)


def state_json(state: ThreadState) -> bytes:
    """A thread state's values as JSON text."""
    return values_json(state.values)


def run_event(seq: int, run_id: str, event: str, data: Any) -> bytes:
    """An encoded `RunEvent` whose data is JSON text: seq (1), run_id (2), event (3),
    data_json (5)."""
    text = values_json(data) if isinstance(data, Mapping) else orjson.dumps(_doubles(data))
    head = b"\x08" + codec.varint(seq) if seq else b""
    return b"".join(
        (
            head,
            codec.field(0x12, run_id.encode()),
            codec.field(0x1A, event.encode()),
            codec.field(0x2A, text),
        )
    )


def _key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"key {key!r} is not a string")
    return key


def _doubles(data: Any) -> Any:
    """A copy of JSON data whose integers are floats, as a `Struct` carries them; refuses what
    JSON cannot carry, as the `Struct` encoding does."""
    kind = type(data)
    if kind is str or data is None or kind is bool:
        return data
    if kind is float:
        if not math.isfinite(data):
            raise ValueError(f"{data!r} is not a JSON number")
        return data
    if kind is int:
        return float(data)  # OverflowError past a double's range, as the Struct's encoder
    if kind is dict:
        return {_key(key): _doubles(item) for key, item in data.items()}
    if kind is list or kind is tuple:
        return [_doubles(item) for item in data]
    if isinstance(data, str):
        return str(data)
    if isinstance(data, int | float):
        return _doubles(float(data))
    if isinstance(data, Mapping):
        return {_key(key): _doubles(item) for key, item in data.items()}
    if isinstance(data, list | tuple):
        return [_doubles(item) for item in data]
    raise TypeError(f"a {kind.__name__} is not JSON")


class _Prefixes:
    """The text of the message lists seen last, by the identity of their first message.

    A thread's state, the copy its run works on and every `values` snapshot of it are lists
    of the same message objects, and a stored message is never changed (an update replaces it
    with a new one): a list whose first `n` items are the very objects of one seen before
    reuses the text of those `n` and encodes only the rest. Checking identities runs in C.
    The run's own state and the store's cached one each hold their own objects for the
    messages a run added, so the next run's list matches the text seen last only up to those:
    the longest common run of identities is found (a binary search over C-speed checks) and
    its text reused. The newest entries are kept, within `max_bytes` of text.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._bytes = 0
        # first message's id -> (the messages, their texts joined by commas, where each ends)
        self._entries: OrderedDict[int, tuple[list[Any], bytes, array[int]]] = OrderedDict()

    def get(self, messages: list[Any]) -> bytes:
        """The messages' JSON texts, joined by commas."""
        key = id(messages[0])
        entry = self._entries.pop(key, None)
        count, text, ends = 0, b"", array("Q")
        if entry is not None:
            known, known_text, known_ends = entry
            self._bytes -= len(known_text)
            count = _common(known, messages)
            if count == len(known):
                text, ends = known_text, known_ends
            elif count:
                text, ends = known_text[: known_ends[count - 1]], known_ends[:count]
        if count < len(messages):
            texts = [orjson.dumps(_doubles(m)) for m in messages[count:]]
            ends = array("Q", ends)
            offset = len(text)
            for piece in texts:
                offset += len(piece) + (1 if offset else 0)
                ends.append(offset)
            tail = b",".join(texts)
            text = text + b"," + tail if count else tail
        # The list is copied: the caller's may be appended to, or replaced into, afterwards.
        self._entries[key] = (list(messages), text, ends)
        self._bytes += len(text)
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            _, (_, dropped, _) = self._entries.popitem(last=False)
            self._bytes -= len(dropped)
        return text


def _common(known: list[Any], messages: list[Any]) -> int:
    """How many leading items `known` and `messages` share (the very same objects)."""
    high = min(len(known), len(messages))
    if all(map(operator.is_, known[:high], messages[:high])):
        return high
    low = 0  # known[:low] match; known[:high + 1] do not
    while low < high:
        middle = (low + high + 1) // 2
        if all(map(operator.is_, islice(known, low, middle), islice(messages, low, middle))):
            low = middle
        else:
            high = middle - 1
    return low


_PREFIXES = _Prefixes(16 << 20)
"""Up to 16 MB of text; the messages it holds stay alive with it (about five times as much)."""
