"""The hand-written protobuf encoder against protobuf's own, and its refusals."""

from __future__ import annotations

import gc
import math
import weakref
from collections import UserDict
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from turnstile.v1 import run_pb2
from turnstile_server.api import codec
from turnstile_server.state import ThreadState

# Finite numbers only: NaN and infinities are refused (tested below). Keys and strings of any
# length, so that fields of 128 bytes and more (two-byte lengths) come up.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=200),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=150), children, max_size=6)
    ),
    max_leaves=30,
)


def _reference(data: Any) -> struct_pb2.Value:
    """What protobuf itself builds for `data`."""
    message = struct_pb2.Value()
    if isinstance(data, dict):
        message.struct_value.SetInParent()  # set even when empty
        message.struct_value.update(data)
    elif isinstance(data, list):
        message.list_value.SetInParent()
        message.list_value.extend(data)
    elif isinstance(data, bool):
        message.bool_value = data
    elif isinstance(data, int | float):
        message.number_value = data
    elif isinstance(data, str):
        message.string_value = data
    else:
        message.null_value = struct_pb2.NULL_VALUE
    return message


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_a_value_decodes_to_what_protobuf_builds(data: Any) -> None:
    assert struct_pb2.Value.FromString(codec.value(data)) == _reference(data)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=150), json_values, max_size=6), st.integers(0, 2**40))
def test_an_event_decodes_to_what_protobuf_builds(data: dict[str, Any], seq: int) -> None:
    expected = run_pb2.RunEvent(seq=seq, run_id="r" * 36, event="custom")
    expected.data.struct_value.SetInParent()
    expected.data.struct_value.update(data)
    framed = codec.frame(codec.run_event(seq, "r" * 36, "custom", data))
    assert run_pb2.RunEvent.FromString(codec.unframe(framed)) == expected


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 128, 129, 16_383, 16_384, 70_000])
def test_lengths_around_each_varint_boundary(size: int) -> None:
    text = "x" * size
    for data in (text, {text: text}, [text], {"k": [text, {"v": text}]}, {"é" * (size // 2): 1}):
        assert struct_pb2.Value.FromString(codec.value(data)) == _reference(data)


def test_subclasses_of_the_json_types_encode_as_their_base() -> None:
    class Text(str):
        pass

    data = {"a": UserDict({"b": (1, Text("x"))}), "n": True}
    assert struct_pb2.Value.FromString(codec.value(data)) == _reference(
        {"a": {"b": [1, "x"]}, "n": True}
    )


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        ({"a": [1, {"b": math.nan}]}, ValueError, "data.a[1].b: nan is not a JSON number"),
        ({"a": {"b": -math.inf}}, ValueError, "data.a.b: -inf is not a JSON number"),
        ({"x": {1: 2}}, TypeError, "data.x: key 1 is not a string"),
        ([{"y": object()}], TypeError, "data[0].y: a object is not JSON"),
        ({1, 2}, TypeError, "data: a set is not JSON"),
    ],
)
def test_what_json_cannot_carry_is_refused_with_its_path(
    data: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        codec.value(data)
    assert str(raised.value) == message


def test_a_bad_message_in_a_state_is_refused_with_its_path() -> None:
    with pytest.raises(ValueError, match=r"^values\.messages\.messages\[\]\.n: nan"):
        codec.struct_body({"messages": [{"n": math.nan}]}, "values", state=True)


@pytest.mark.parametrize("count", [1, 3, 2_000])
def test_a_state_in_pieces_is_the_struct_protobuf_builds(count: int) -> None:
    messages = [{"id": f"m{i}", "type": "human", "content": "x" * (i % 300)} for i in range(count)]
    state = ThreadState({"before": 1, "messages": messages, "after": {"k": [True, None]}})
    body = codec.state_body(state)
    assert body == codec.struct_body(state.values, "values", state=True)
    assert struct_pb2.Struct.FromString(body) == _struct_of(state.values)
    state.apply({"messages": [{"id": "new", "type": "ai", "content": "y"}]})  # appended
    assert struct_pb2.Struct.FromString(b"".join(codec.state_parts(state))) == _struct_of(
        state.values
    )


def _struct_of(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def _decoded(body: bytes) -> dict[str, Any]:
    return json_format.MessageToDict(struct_pb2.Struct.FromString(body))


def test_state_encoding_follows_appends_replacements_and_copies() -> None:
    state = ThreadState({"messages": [{"id": "a", "type": "human", "content": "hi"}], "n": 1})
    assert _decoded(codec.state_body(state)) == state.snapshot()
    state.apply({"messages": [{"id": "b", "type": "ai", "content": "hello"}]})
    assert codec.encoded_messages(state) == 1, "appended: encoded up to a"
    assert _decoded(codec.state_body(state)) == state.snapshot()
    copy = state.copy()
    state.apply({"messages": [{"id": "a", "type": "human", "content": "changed"}], "n": 2})
    assert codec.encoded_messages(state) == 0, "a replaced message drops what was encoded"
    assert _decoded(codec.state_body(state)) == state.snapshot()
    assert _decoded(codec.state_body(copy))["messages"][0]["content"] == "hi"
    copy.apply({"messages": [{"id": "c", "type": "ai", "content": "more"}]})
    assert _decoded(codec.state_body(copy)) == copy.snapshot()
    assert codec.state_body(state) == codec.struct_body(state.values, "values", state=True)


def test_what_the_codec_keeps_of_a_state_does_not_keep_the_state_alive() -> None:
    state = ThreadState({"messages": [{"id": "a", "type": "human", "content": "hi"}]})
    codec.state_body(state)
    assert codec.encoded_messages(state) == 1
    ref = weakref.ref(state)
    del state
    gc.collect()
    assert ref() is None


# An update appends or replaces messages (by id, from a small pool so that replacements come
# up often) and sets other keys; the state's encoding is checked after every update.
messages_updates = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.sampled_from(["m0", "m1", "m2", "m3", "m4", "m5"]),
            "type": st.sampled_from(["human", "ai"]),
            "content": st.text(max_size=200),
        },
        optional={"extra": json_values},
    ),
    max_size=4,
)
updates = st.lists(
    st.fixed_dictionaries(
        {"messages": messages_updates},
        optional={"other": json_values, "n": st.integers(-(2**53), 2**53)},
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(updates, st.booleans())
def test_a_state_decodes_to_what_protobuf_builds_after_any_appends_and_replacements(
    steps: list[dict[str, Any]], copied: bool
) -> None:
    state = ThreadState()
    for update in steps:
        state.apply(update)
        if copied:  # a copy starts from what its original encoded
            state = state.copy()
        expected = _struct_of(state.values)
        assert struct_pb2.Struct.FromString(codec.state_body(state)) == expected
        assert struct_pb2.Struct.FromString(b"".join(codec.state_parts(state))) == expected
        body = codec.struct_body(state.snapshot(), "values", state=True)
        assert struct_pb2.Struct.FromString(body) == expected
        event = run_pb2.RunEvent.FromString(
            codec.unframe(
                codec.frame(codec.run_event(7, "r", "values", state.snapshot(), state=True))
            )
        )
        assert event.data.struct_value == expected
