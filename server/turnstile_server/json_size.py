"""The encoded size of JSON values as protobuf sends them (`google.protobuf.Value`/`Struct`),
computed without encoding: what a thread's state costs in every answer that carries it.

The sizes match `api/codec.py`'s encoding byte for byte (`tests/test_output_limits.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_ANSWER_BYTES = 64 << 20
"""The largest message the server sends by default (`--max-answer-bytes`' default), which is
what the SDK receives."""
NUMBER = 9
"""A `Value.number_value`: its tag and a double."""
SCALAR = 2
"""A `Value` holding null or a boolean: its tag and one byte."""


def varint_size(number: int) -> int:
    """The bytes of a non-negative integer as a protobuf varint."""
    size = 1
    while number >= 0x80:
        number >>= 7
        size += 1
    return size


def field_size(payload: int) -> int:
    """A length-delimited field (tag below 16) around `payload` bytes."""
    return 1 + varint_size(payload) + payload


def text_size(text: str) -> int:
    """The UTF-8 bytes of a string (`isascii` is a flag read: no copy for ASCII text)."""
    return len(text) if text.isascii() else len(text.encode(errors="surrogatepass"))


def value_size(value: Any) -> int:
    """The bytes of `value` encoded as a `google.protobuf.Value`."""
    kind = type(value)
    if kind is str:
        return field_size(text_size(value))
    if value is None or kind is bool:
        return SCALAR
    if kind is int or kind is float:
        return NUMBER
    if isinstance(value, Mapping):
        return field_size(struct_size(value))
    if isinstance(value, list | tuple):
        return field_size(items_size(value))
    if isinstance(value, str):
        return field_size(text_size(value))
    if isinstance(value, int | float):
        return NUMBER
    return field_size(text_size(str(value)))  # not JSON: never stored, a guess is enough


def items_size(items: Any) -> int:
    """The bytes of a `ListValue`'s items (`values`, field 1)."""
    return sum(field_size(value_size(item)) for item in items)


def struct_size(values: Mapping[str, Any]) -> int:
    """The bytes of a `Struct`'s body (its `fields` map entries)."""
    return sum(entry_size(key, item) for key, item in values.items())


def entry_size(key: str, value: Any) -> int:
    """One `Struct.fields` map entry, framed: key (1), value (2)."""
    return field_size(field_size(text_size(str(key))) + field_size(value_size(value)))


def list_entry_size(key: str, items: int) -> int:
    """`entry_size` of a list whose items take `items` bytes (`items_size`)."""
    return field_size(field_size(text_size(key)) + field_size(field_size(items)))
