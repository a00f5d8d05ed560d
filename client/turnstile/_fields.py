"""A message's fields read into a TypedDict, and keyword arguments written into a message.

Both are derived once, at import, from the proto descriptor and the TypedDict's annotations,
so that a new field needs its key in `_types.py` and nothing here: its proto type says how it
converts, the key's annotation whether an unset field reads as `None`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Protocol, get_args, get_type_hints, is_typeddict

from google.protobuf.descriptor import Descriptor, FieldDescriptor

Reader = Callable[[Any], Any]
"""Reads one value out of a message."""
Encoder = Callable[[Any, str], Any]
"""Encodes a value as a message; the second argument names it in errors."""


class EnumStrings(Protocol):
    """An enum's values as strings (`_convert.EnumCodec`)."""

    def encode(self, name: str | None) -> int: ...
    def decode(self, number: int) -> str: ...


@dataclass(frozen=True)
class Conversions:
    """How the SDK's values meet the fields of messages: by enum or message full name."""

    enums: Mapping[str, EnumStrings]
    decoders: Mapping[str, Reader]
    encoders: Mapping[str, Encoder]
    unspecified: str
    """What an enum codec decodes an unset value to."""


def dict_reader(message: Descriptor, shape: type, conversions: Conversions) -> Reader:
    """Reads a `message` into a dict with the keys of the TypedDict `shape`, in its order.

    Each key is read from the field of its name. A key whose annotation admits `None` reads a
    field left unset as `None`: a message or an `optional` scalar without presence, an empty
    string or list, a zero number, an unspecified enum; any other key reads the field's value
    as it is. Enums decode through `conversions.enums`, messages through
    `conversions.decoders`, or as the TypedDict of their annotation, recursively.
    """
    readers = tuple(
        (key, _reader(_field(message, key, shape), hint, conversions))
        for key, hint in get_type_hints(shape).items()
    )
    return lambda m: {key: read(m) for key, read in readers}


def field_writer(
    message: Descriptor, shape: type, conversions: Conversions
) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """Encodes keyword arguments (keys of the TypedDict `shape`) as `message`'s constructor's.

    `None` leaves a field unset (the server's default). Enums encode through
    `conversions.enums` (a repeated one takes one string or a sequence), messages through
    `conversions.encoders`, a repeated string field takes one string or a sequence of them,
    a bool field any truth value; other scalars go as they are, for protobuf to check. A key
    that `shape` lacks raises `TypeError`, as an unknown keyword argument does.
    """
    encoders = {key: _encoder(_field(message, key, shape), conversions) for key in _keys(shape)}

    def write(values: Mapping[str, Any]) -> dict[str, Any]:
        fields = {}
        for key, value in values.items():
            encode = encoders.get(key)
            if encode is None:
                raise TypeError(f"got an unexpected keyword argument {key!r}")
            if value is not None:
                fields[key] = encode(value)
        return fields

    return write


def _keys(shape: type) -> tuple[str, ...]:
    return tuple(get_type_hints(shape))


def _field(message: Descriptor, key: str, shape: type) -> FieldDescriptor:
    field = message.fields_by_name.get(key)
    if field is None:
        raise TypeError(f"{shape.__name__}[{key!r}] has no field in {message.full_name}")
    return field


def _reader(field: FieldDescriptor, hint: Any, conversions: Conversions) -> Reader:
    name = field.name
    args = get_args(hint)
    nullable = type(None) in args
    shown = next(arg for arg in args if arg is not type(None)) if nullable else hint
    if field.is_repeated:
        if field.message_type is not None or field.enum_type is not None:
            raise TypeError(f"{field.full_name}: a repeated message or enum is not derived")
        if nullable:
            return lambda m: list(getattr(m, name)) or None
        return lambda m: list(getattr(m, name))
    if field.message_type is not None:
        decode = _decoder(field.message_type, shown, conversions)
        if nullable:
            return lambda m: decode(getattr(m, name)) if m.HasField(name) else None
        return lambda m: decode(getattr(m, name))
    if field.enum_type is not None:
        codec = conversions.enums[field.enum_type.full_name]
        if nullable:
            unset = conversions.unspecified
            return lambda m: None if (text := codec.decode(getattr(m, name))) == unset else text
        return lambda m: codec.decode(getattr(m, name))
    if nullable and field.has_presence:
        return lambda m: getattr(m, name) if m.HasField(name) else None
    if nullable:
        return lambda m: getattr(m, name) or None
    return attrgetter(name)


def _decoder(message: Descriptor, shown: Any, conversions: Conversions) -> Reader:
    decode = conversions.decoders.get(message.full_name)
    if decode is not None:
        return decode
    if is_typeddict(shown):
        return dict_reader(message, shown, conversions)
    raise TypeError(f"{message.full_name}: no decoder for a value shown as {shown!r}")


def _encoder(field: FieldDescriptor, conversions: Conversions) -> Callable[[Any], Any]:
    name = field.name
    if field.enum_type is not None:
        encode = conversions.enums[field.enum_type.full_name].encode
        if field.is_repeated:
            return lambda v: [encode(item) for item in ([v] if isinstance(v, str) else v)]
        return encode
    if field.is_repeated:
        if field.message_type is not None:
            raise TypeError(f"{field.full_name}: a repeated message is not derived")
        return lambda v: _strings(v, name)
    if field.message_type is not None:
        encode_message = conversions.encoders[field.message_type.full_name]
        return lambda v: encode_message(v, name)
    if field.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return bool
    return lambda v: v


def _strings(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    listed = list(value)
    if not all(isinstance(item, str) for item in listed):
        raise TypeError(f"{what} must be a string or a sequence of strings")
    return listed
