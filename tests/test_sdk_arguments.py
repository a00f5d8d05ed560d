"""The SDK's admission arguments, declared once (`RunArguments`), as the requests' fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_type_hints

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import turnstile
from turnstile import _convert as convert
from turnstile import _runs
from turnstile._types import RunArguments, StreamRunArguments
from turnstile.v1 import run_service_pb2 as pb

_NOT_ARGUMENTS = {"thread_id", "assistant_id"}


@pytest.mark.parametrize(
    ("request_type", "arguments"),
    [
        (pb.CreateRunRequest, RunArguments),
        (pb.WaitRunRequest, RunArguments),
        (pb.StreamRunRequest, StreamRunArguments),
    ],
)
def test_every_field_of_an_admission_request_is_an_argument(
    request_type: Any, arguments: type
) -> None:
    # A new field of the three requests needs its key in `RunArguments` (`_types.py`) only.
    fields = [f.name for f in request_type.DESCRIPTOR.fields if f.name not in _NOT_ARGUMENTS]
    assert sorted(get_type_hints(arguments)) == sorted(fields)


def _names(names: str | Sequence[str] | None) -> list[str]:
    return [] if names is None else [names] if isinstance(names, str) else list(names)


def hand_written_admission(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The admission fields as `_runs._admission` and `_runs._options` encoded them, argument
    by argument, before `RunArguments` was declared once: the oracle for the derived writer."""
    get = arguments.get
    modes = get("stream_mode")
    fields: dict[str, Any] = {
        "input": convert.to_struct(get("input"), "input"),
        "metadata": convert.to_struct(get("metadata"), "metadata"),
        "config": convert.to_struct(get("config"), "config"),
        "stream_mode": [convert.STREAM_MODE.encode(mode) for mode in _names(modes)],
        "multitask_strategy": convert.MULTITASK_STRATEGY.encode(get("multitask_strategy")),
        "after_seconds": get("after_seconds") or 0.0,
        "if_not_exists": convert.IF_NOT_EXISTS.encode(get("if_not_exists")),
        "request_id": get("request_id") or "",
        "timeout_seconds": get("timeout_seconds") or 0.0,
        "durability": convert.DURABILITY.encode(get("durability")),
        "command": convert.command_message(get("command")),
        "context": convert.to_struct(get("context"), "context"),
        "stream_subgraphs": bool(get("stream_subgraphs", False)),
        "interrupt_before": _names(get("interrupt_before")),
        "interrupt_after": _names(get("interrupt_after")),
        "checkpoint_id": get("checkpoint_id") or "",
        "on_pending_interrupt": convert.ON_PENDING_INTERRUPT.encode(get("on_pending_interrupt")),
    }
    if get("close_tool_calls") is not None:
        fields["close_tool_calls"] = bool(get("close_tool_calls"))
    return fields


_texts = st.text(max_size=6)
_objects = st.none() | st.dictionaries(_texts, st.none() | st.booleans() | _texts, max_size=2)
_nodes = st.none() | st.just("*") | st.lists(_texts, max_size=2)
_arguments = st.fixed_dictionaries(
    {},
    optional={
        "input": _objects,
        "metadata": _objects,
        "config": _objects,
        "stream_mode": st.none()
        | st.sampled_from(convert.STREAM_MODE.names)
        | st.lists(st.sampled_from(convert.STREAM_MODE.names), max_size=3),
        "multitask_strategy": st.none() | st.sampled_from(convert.MULTITASK_STRATEGY.names),
        "after_seconds": st.none() | st.floats(0, 1e6),
        "if_not_exists": st.none() | st.sampled_from(convert.IF_NOT_EXISTS.names),
        "request_id": st.none() | _texts,
        "timeout_seconds": st.none() | st.floats(0, 1e6),
        "durability": st.none() | st.sampled_from(convert.DURABILITY.names),
        "command": st.none()
        | st.fixed_dictionaries({}, optional={"resume": _objects, "goto": _nodes}),
        "context": _objects,
        "stream_subgraphs": st.booleans(),
        "interrupt_before": _nodes,
        "interrupt_after": _nodes,
        "checkpoint_id": st.none() | _texts,
        "close_tool_calls": st.none() | st.booleans(),
        "on_pending_interrupt": st.none() | st.sampled_from(convert.ON_PENDING_INTERRUPT.names),
    },
)


@settings(max_examples=300, deadline=None)
@given(_arguments)
def test_the_derived_admission_fields_make_the_request_the_hand_written_ones_made(
    arguments: dict[str, Any],
) -> None:
    derived = _runs._ADMISSION(arguments)
    for request_type in (pb.CreateRunRequest, pb.WaitRunRequest, pb.StreamRunRequest):
        assert request_type(**derived) == request_type(**hand_written_admission(arguments))


def test_none_leaves_a_field_unset_and_a_repeated_one_takes_one_value_or_several() -> None:
    encode = _runs._ADMISSION
    assert encode({"stream_mode": None, "close_tool_calls": None}) == {}
    assert encode({"stream_mode": "values"}) == {
        "stream_mode": [convert.STREAM_MODE.encode("values")]
    }
    assert encode({"interrupt_before": "*"}) == {"interrupt_before": ["*"]}
    assert encode({"close_tool_calls": False}) == {"close_tool_calls": False}
    with pytest.raises(ValueError, match="stream mode 'trace'"):
        encode({"stream_mode": ["values", "trace"]})
    with pytest.raises(TypeError, match="interrupt_after must be a string or a sequence"):
        encode({"interrupt_after": ["a", 1]})
    with pytest.raises(TypeError, match="context must be a mapping"):
        encode({"context": [1]})


async def test_an_unknown_argument_raises_type_error_before_any_call_is_made() -> None:
    # Nothing listens on port 1: reaching the network would fail with UnavailableError.
    client = turnstile.get_client("127.0.0.1:1", timeout=1)
    try:
        with pytest.raises(TypeError, match="unexpected keyword argument 'timeout'"):
            await client.runs.create("t", "agent", timeout=5)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="'on_disconnect'"):
            await client.runs.wait("t", "agent", on_disconnect="cancel")  # type: ignore[call-arg]
        client.runs.stream("t", "agent", on_disconnect="cancel")  # accepted by stream
    finally:
        await client.close()
