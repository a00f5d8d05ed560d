"""The SDK's pure conversions: protos to dicts, enum strings, error trailers, paging."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, get_args, get_type_hints

import grpc  # type: ignore[import-untyped, unused-ignore]
import pytest
from google.protobuf import any_pb2, struct_pb2, timestamp_pb2
from google.rpc import (  # type: ignore[import-untyped, unused-ignore]
    code_pb2,
    error_details_pb2,
    status_pb2,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import turnstile
from turnstile import _convert as convert
from turnstile._errors import STATUS_DETAILS_KEY, error_from_status
from turnstile._paging import page_through
from turnstile._types import Run
from turnstile.v1 import assistant_pb2, run_pb2, thread_pb2

T0 = datetime.datetime(2024, 6, 25, 18, 30, 12, 123456, tzinfo=datetime.UTC)


def timestamp(at: datetime.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at)
    return ts


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    result = struct_pb2.Struct()
    result.update(value)
    return result


def trailers(
    code: int, message: str, *details: Any, extra: Sequence[tuple[str, str | bytes]] = ()
) -> list[tuple[str, str | bytes]]:
    """The trailing metadata a server sends with a `google.rpc.Status`."""
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    status = status_pb2.Status(code=code, message=message, details=packed)
    return [*extra, (STATUS_DETAILS_KEY, status.SerializeToString())]


# --- runs, threads, assistants, checkpoints ----------------------------------------------


def test_run_with_every_field_set_converts_to_a_dict_keyed_by_proto_field_names() -> None:
    run = run_pb2.Run(
        run_id="r1",
        thread_id="t1",
        assistant_id="agent",
        status=run_pb2.RUN_STATUS_INTERRUPTED,
        multitask_strategy=run_pb2.MULTITASK_STRATEGY_ROLLBACK,
        metadata=struct({"user": "ada", "n": 2}),
        create_time=timestamp(T0),
        start_time=timestamp(T0 + datetime.timedelta(seconds=1)),
        end_time=timestamp(T0 + datetime.timedelta(seconds=2)),
        attempt=1,
        error=run_pb2.RunError(type="ValueError", message="boom"),
        cancel_reason="superseded by r2",
        superseded_by="r2",
        queue_position=3,
        durability=run_pb2.DURABILITY_EXIT,
        context=struct({"user": "ada"}),
        stream_subgraphs=True,
        command=run_pb2.Command(
            resume_by_id={"0123456789abcdef0123456789abcdef": struct_pb2.Value(bool_value=True)},
            update=struct({"k": "v"}),
            goto=["tools"],
        ),
        interrupt_before=["*"],
        interrupt_after=["agent", "tools"],
        checkpoint_id="c1",
        close_tool_calls=False,
        discarded_interrupts=["i1"],
        on_pending_interrupt=run_pb2.ON_PENDING_INTERRUPT_REJECT,
    )

    converted = convert.run_to_dict(run)
    # The fields of this test's time; a later field is read by the rule the property tests.
    expected: dict[str, Any] = {
        "run_id": "r1",
        "thread_id": "t1",
        "assistant_id": "agent",
        "status": "interrupted",
        "multitask_strategy": "rollback",
        "metadata": {"user": "ada", "n": 2.0},
        "create_time": "2024-06-25T18:30:12.123456+00:00",
        "start_time": "2024-06-25T18:30:13.123456+00:00",
        "end_time": "2024-06-25T18:30:14.123456+00:00",
        "attempt": 1,
        "error": {"type": "ValueError", "message": "boom"},
        "cancel_reason": "superseded by r2",
        "superseded_by": "r2",
        "queue_position": 3,
        "timeout_seconds": None,
        "durability": "exit",
        "context": {"user": "ada"},
        "stream_subgraphs": True,
        "command": {
            "resume": {"0123456789abcdef0123456789abcdef": True},
            "update": {"k": "v"},
            "goto": ["tools"],
        },
        "interrupt_before": ["*"],
        "interrupt_after": ["agent", "tools"],
        "checkpoint_id": "c1",
        "close_tool_calls": False,
        "discarded_interrupts": ["i1"],
        "on_pending_interrupt": "reject",
    }
    assert {key: converted[key] for key in expected} == expected  # type: ignore[literal-required]


def test_run_unset_fields_become_none_and_queue_position_zero_stays_zero() -> None:
    bare = convert.run_to_dict(run_pb2.Run(run_id="r1", status=run_pb2.RUN_STATUS_RUNNING))
    assert bare["start_time"] is None
    assert bare["end_time"] is None
    assert bare["create_time"] is None
    assert bare["error"] is None
    assert bare["cancel_reason"] is None
    assert bare["superseded_by"] is None
    assert bare["queue_position"] is None
    assert bare["metadata"] == {}
    assert (bare["command"], bare["context"], bare["checkpoint_id"]) == (None, None, None)
    assert (bare["interrupt_before"], bare["interrupt_after"]) == (None, None)
    assert (bare["close_tool_calls"], bare["on_pending_interrupt"]) == (None, None)
    assert bare["discarded_interrupts"] == []
    assert bare["multitask_strategy"] == convert.UNSPECIFIED

    pending = run_pb2.Run(status=run_pb2.RUN_STATUS_PENDING, queue_position=0)
    assert convert.run_to_dict(pending)["queue_position"] == 0


def hand_written_run_to_dict(run: run_pb2.Run) -> dict[str, Any]:
    """The SDK's `run_to_dict` as it was written by hand, field by field, before the dict was
    derived from `Run`'s descriptor and the `Run` TypedDict: the oracle for the derived one."""
    error = None
    if run.HasField("error"):
        error = {"type": run.error.type, "message": run.error.message}
    pending = convert.ON_PENDING_INTERRUPT.decode(run.on_pending_interrupt)
    return {
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "assistant_id": run.assistant_id,
        "status": convert.RUN_STATUS.decode(run.status),
        "multitask_strategy": convert.MULTITASK_STRATEGY.decode(run.multitask_strategy),
        "metadata": convert.struct_to_dict(run.metadata),
        "create_time": convert.iso(run.create_time) if run.HasField("create_time") else None,
        "start_time": convert.iso(run.start_time) if run.HasField("start_time") else None,
        "end_time": convert.iso(run.end_time) if run.HasField("end_time") else None,
        "attempt": run.attempt,
        "error": error,
        "cancel_reason": run.cancel_reason or None,
        "superseded_by": run.superseded_by or None,
        "queue_position": run.queue_position if run.HasField("queue_position") else None,
        "timeout_seconds": run.timeout_seconds or None,
        "durability": convert.DURABILITY.decode(run.durability),
        "context": convert.struct_to_dict(run.context) if run.HasField("context") else None,
        "stream_subgraphs": run.stream_subgraphs,
        "command": convert.command_to_dict(run.command) if run.HasField("command") else None,
        "interrupt_before": list(run.interrupt_before) or None,
        "interrupt_after": list(run.interrupt_after) or None,
        "checkpoint_id": run.checkpoint_id or None,
        "close_tool_calls": run.close_tool_calls if run.HasField("close_tool_calls") else None,
        "discarded_interrupts": list(run.discarded_interrupts),
        "on_pending_interrupt": pending if pending != convert.UNSPECIFIED else None,
    }


_texts = st.text(max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=6,
)
_structs = st.dictionaries(_texts, _json, max_size=3).map(struct)
_stamps = st.builds(
    timestamp_pb2.Timestamp,
    seconds=st.integers(-62_135_596_800, 253_402_300_799),
    nanos=st.integers(0, 999_999_999),
)
_commands = st.builds(
    run_pb2.Command,
    resume=st.none() | _json.map(lambda value: convert.to_value(value, "resume")),
    update=st.none() | _structs,
    goto=st.lists(_texts, max_size=2),
) | st.builds(
    run_pb2.Command,
    resume_by_id=st.dictionaries(_texts, _json.map(lambda v: convert.to_value(v, "r")), max_size=2),
)


def _field_values(field: Any) -> st.SearchStrategy[Any]:
    """Values for one field of `Run`, by its type; `None` leaves it unset."""
    values: st.SearchStrategy[Any]
    if field.message_type is not None:
        by_message: dict[str, st.SearchStrategy[Any]] = {
            "google.protobuf.Struct": _structs,
            "google.protobuf.Timestamp": _stamps,
            "turnstile.v1.RunError": st.builds(run_pb2.RunError, type=_texts, message=_texts),
            "turnstile.v1.Command": _commands,
        }
        values = by_message[field.message_type.full_name]
    elif field.enum_type is not None:
        # Every value the enum declares, 0 (unset) among them, and one from a newer server.
        values = st.sampled_from([v.number for v in field.enum_type.values] + [99])
    elif field.is_repeated:
        values = st.lists(_texts, max_size=3)
    else:
        scalar: dict[int, st.SearchStrategy[Any]] = {
            field.CPPTYPE_STRING: _texts,
            field.CPPTYPE_INT32: st.integers(-(2**31), 2**31 - 1),
            field.CPPTYPE_INT64: st.integers(-(2**63), 2**63 - 1),
            field.CPPTYPE_DOUBLE: st.floats(allow_nan=False) | st.just(0.0),
            field.CPPTYPE_BOOL: st.booleans(),
        }
        values = scalar[field.cpp_type]
    return st.none() | values


_runs = st.fixed_dictionaries(
    {}, optional={f.name: _field_values(f) for f in run_pb2.Run.DESCRIPTOR.fields}
).map(lambda fields: run_pb2.Run(**{k: v for k, v in fields.items() if v is not None}))


@settings(max_examples=400, deadline=None)
@given(_runs)
def test_the_derived_run_dict_is_the_hand_written_one_key_for_key_in_order(
    run: run_pb2.Run,
) -> None:
    derived = dict(convert.run_to_dict(run))
    expected = hand_written_run_to_dict(run)
    assert {key: derived.pop(key) for key in expected} == expected
    assert list(convert.run_to_dict(run))[: len(expected)] == list(expected)
    # A field added since the oracle was written: by the rule, as its annotation says.
    hints = get_type_hints(Run)
    for key, value in derived.items():
        field = run_pb2.Run.DESCRIPTOR.fields_by_name[key]
        assert field.message_type is None and field.enum_type is None and not field.is_repeated
        raw = getattr(run, key)
        if type(None) not in get_args(hints[key]):
            assert value == raw
        elif field.has_presence:
            assert value == (raw if run.HasField(key) else None)  # type: ignore[arg-type]
        else:
            assert value == (raw or None)


def test_every_field_of_the_run_message_is_a_key_of_the_run_dict() -> None:
    # A new field of `Run` needs its key in the `Run` TypedDict (`_types.py`), nothing more:
    # how it reads comes from its proto type and the key's annotation.
    assert list(Run.__annotations__) == [f.name for f in run_pb2.Run.DESCRIPTOR.fields]


def test_timestamps_are_iso_8601_strings_that_parse_back_to_the_same_instant() -> None:
    run = run_pb2.Run(create_time=timestamp(T0))
    created = convert.run_to_dict(run)["create_time"]
    assert created is not None
    assert datetime.datetime.fromisoformat(created) == T0


def test_thread_converts_with_status_values_and_times() -> None:
    thread = thread_pb2.Thread(
        thread_id="t1",
        metadata=struct({"k": "v"}),
        status=thread_pb2.THREAD_STATUS_BUSY,
        values=struct({"messages": [{"type": "human", "content": "hi"}]}),
        create_time=timestamp(T0),
    )
    assert convert.thread_to_dict(thread) == {
        "thread_id": "t1",
        "metadata": {"k": "v"},
        "status": "busy",
        "values": {"messages": [{"type": "human", "content": "hi"}]},
        "create_time": "2024-06-25T18:30:12.123456+00:00",
        "update_time": None,
        "interrupts": {},
        "interruption": None,
    }


def test_a_thread_waiting_for_input_has_its_interrupts_by_task_as_langgraph_sdk() -> None:
    thread = thread_pb2.Thread(
        thread_id="t1",
        status=thread_pb2.THREAD_STATUS_INTERRUPTED,
        interruption=thread_pb2.INTERRUPTION_AWAITING_INPUT,
        interrupts=[
            thread_pb2.Interrupt(id="i1", value=struct_pb2.Value(string_value="ok?"), task_id="a"),
            thread_pb2.Interrupt(id="i2", value=struct_pb2.Value(number_value=2), task_id="b"),
            thread_pb2.Interrupt(id="i3", task_id="a"),
        ],
    )

    converted = convert.thread_to_dict(thread)

    assert converted["interruption"] == "awaiting_input"
    assert converted["interrupts"] == {
        "a": [{"id": "i1", "value": "ok?"}, {"id": "i3", "value": None}],
        "b": [{"id": "i2", "value": 2.0}],
    }


def test_assistant_converts_with_config_and_metadata() -> None:
    assistant = assistant_pb2.Assistant(
        assistant_id="a1",
        graph_id="agent",
        name="weather",
        config=struct({"configurable": {"model": "x"}}),
        update_time=timestamp(T0),
    )
    assert convert.assistant_to_dict(assistant) == {
        "assistant_id": "a1",
        "graph_id": "agent",
        "name": "weather",
        "config": {"configurable": {"model": "x"}},
        "metadata": {},
        "create_time": None,
        "update_time": "2024-06-25T18:30:12.123456+00:00",
    }


def test_checkpoint_converts_to_a_thread_state() -> None:
    checkpoint = thread_pb2.Checkpoint(
        checkpoint_id="c1",
        thread_id="t1",
        run_id="r1",
        step=2,
        source=thread_pb2.CHECKPOINT_SOURCE_STEP,
        values=struct({"messages": []}),
        create_time=timestamp(T0),
        checkpoint_ns="",
        parent_checkpoint=thread_pb2.CheckpointRef(thread_id="t1", checkpoint_id="c0"),
        next=["ask"],
        tasks=[
            thread_pb2.ThreadTask(
                id="k1",
                name="ask",
                interrupts=[
                    thread_pb2.Interrupt(
                        id="i1", value=struct_pb2.Value(string_value="ok?"), task_id="k1"
                    )
                ],
                checkpoint=thread_pb2.CheckpointRef(
                    thread_id="t1", checkpoint_ns="ask:k1", checkpoint_id="s1"
                ),
            ),
            thread_pb2.ThreadTask(id="k2", name="done", error="boom", result=struct({"x": 1})),
        ],
        interrupts=[
            thread_pb2.Interrupt(id="i1", value=struct_pb2.Value(string_value="ok?"), task_id="k1")
        ],
        metadata=struct({"source": "loop", "step": 2, "run_id": "r1"}),
    )
    assert convert.checkpoint_to_dict(checkpoint) == {
        "values": {"messages": []},
        "next": ["ask"],
        "checkpoint": {
            "thread_id": "t1",
            "checkpoint_ns": "",
            "checkpoint_id": "c1",
            "checkpoint_map": None,
        },
        "metadata": {"source": "loop", "step": 2.0, "run_id": "r1"},
        "created_at": "2024-06-25T18:30:12.123456+00:00",
        "parent_checkpoint": {
            "thread_id": "t1",
            "checkpoint_ns": "",
            "checkpoint_id": "c0",
            "checkpoint_map": None,
        },
        "tasks": [
            {
                "id": "k1",
                "name": "ask",
                "error": None,
                "interrupts": [{"id": "i1", "value": "ok?"}],
                "checkpoint": {
                    "thread_id": "t1",
                    "checkpoint_ns": "ask:k1",
                    "checkpoint_id": "s1",
                    "checkpoint_map": None,
                },
                "state": None,
                "result": None,
            },
            {
                "id": "k2",
                "name": "done",
                "error": "boom",
                "interrupts": [],
                "checkpoint": None,
                "state": None,
                "result": {"x": 1.0},
            },
        ],
        "interrupts": [{"id": "i1", "value": "ok?"}],
        "checkpoint_id": "c1",
        "thread_id": "t1",
        "run_id": "r1",
        "step": 2,
        "source": "step",
        "create_time": "2024-06-25T18:30:12.123456+00:00",
    }


def test_state_of_a_thread_without_checkpoints_has_empty_values_and_no_ids() -> None:
    state = convert.checkpoint_to_dict(thread_pb2.Checkpoint(thread_id="t1"))
    assert state["values"] == {}
    assert state["checkpoint_id"] is None
    assert state["run_id"] is None
    assert state["source"] is None
    assert state["create_time"] is None


# --- JSON ----------------------------------------------------------------------------------


def test_struct_round_trip_keeps_json_shape_but_numbers_come_back_as_floats() -> None:
    value = {"a": 1, "b": [1, 2.5, {"c": None}], "d": True, "e": "s", "f": {}}
    encoded = convert.to_struct(value, "input")
    assert encoded is not None
    decoded = convert.struct_to_dict(encoded)
    assert decoded == {"a": 1.0, "b": [1.0, 2.5, {"c": None}], "d": True, "e": "s", "f": {}}
    assert isinstance(decoded["a"], float)


def test_none_stays_unset_and_an_empty_object_is_set() -> None:
    assert convert.to_struct(None, "input") is None
    empty = convert.to_struct({}, "input")
    assert empty is not None
    assert convert.struct_to_dict(empty) == {}


@pytest.mark.parametrize(
    "value", [{"when": datetime.datetime.now(datetime.UTC)}, [1, 2], "text", {1: "int key"}]
)
def test_non_json_objects_raise_type_error_naming_the_argument(value: Any) -> None:
    with pytest.raises(TypeError, match="input"):
        convert.to_struct(value, "input")


def test_an_unset_value_decodes_to_none() -> None:
    assert convert.value_to_python(struct_pb2.Value()) is None


def test_a_batch_of_events_gives_one_part_per_event_in_order() -> None:
    events = [
        run_pb2.RunEvent(seq=4, run_id="r", event="values", data=struct_pb2.Value(number_value=1)),
        run_pb2.RunEvent(seq=5, run_id="r", event="messages", data=struct_pb2.Value()),
        run_pb2.RunEvent(
            seq=6,
            run_id="r",
            event="end",
            data=struct_pb2.Value(struct_value=struct({"status": "success"})),
        ),
    ]
    parts = convert.event_parts(events)
    assert parts == [
        turnstile.StreamPart("values", 1.0, 4),
        turnstile.StreamPart("messages", None, 5),
        turnstile.StreamPart("end", {"status": "success"}, 6),
    ]
    assert parts[2].event == "end"
    assert parts[2].data == {"status": "success"}
    assert parts[2].seq == 6


# --- enums ---------------------------------------------------------------------------------

CODECS: list[tuple[convert.EnumCodec[Any], list[str]]] = [
    (convert.MULTITASK_STRATEGY, ["reject", "interrupt", "rollback", "enqueue"]),
    (
        convert.RUN_STATUS,
        ["pending", "running", "success", "error", "timeout", "interrupted"],
    ),
    (convert.THREAD_STATUS, ["idle", "busy", "interrupted", "error"]),
    (
        convert.STREAM_MODE,
        [
            "values",
            "updates",
            "messages",
            "custom",
            "debug",
            "tasks",
            "checkpoints",
            "events",
            "messages-partial",
        ],
    ),
    (convert.CANCEL_ACTION, ["interrupt", "rollback"]),
    (convert.IF_NOT_EXISTS, ["reject", "create"]),
    (convert.IF_EXISTS, ["raise", "do_nothing"]),
    (convert.CHECKPOINT_SOURCE, ["input", "step", "update", "fork"]),
    (convert.ON_PENDING_INTERRUPT, ["discard", "reject"]),
    (convert.INTERRUPTION, ["cancelled", "awaiting_input"]),
]


def test_messages_tuple_is_langgraph_platforms_name_for_the_messages_mode() -> None:
    assert convert.STREAM_MODE.encode("messages-tuple") == run_pb2.STREAM_MODE_MESSAGES
    assert convert.STREAM_MODE.encode("messages-partial") == run_pb2.STREAM_MODE_MESSAGES_PARTIAL


@pytest.mark.parametrize(("codec", "names"), CODECS)
def test_enum_strings_are_the_lower_case_names_without_prefix_and_round_trip(
    codec: convert.EnumCodec[Any], names: list[str]
) -> None:
    assert list(codec.names) == names
    for name in names:
        assert codec.encode(name) != 0
        assert codec.decode(codec.encode(name)) == name


@pytest.mark.parametrize(("codec", "names"), CODECS)
def test_none_encodes_as_unspecified(codec: convert.EnumCodec[Any], names: list[str]) -> None:
    assert codec.encode(None) == 0
    assert codec.decode(0) == convert.UNSPECIFIED


@pytest.mark.parametrize("bad", ["bogus", "Reject", "REJECT", "MULTITASK_STRATEGY_REJECT", ""])
def test_unknown_strategy_strings_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="expected one of 'reject', 'interrupt'"):
        convert.MULTITASK_STRATEGY.encode(bad)


def test_unhashable_input_raises_value_error_not_type_error() -> None:
    with pytest.raises(ValueError, match="unknown run status"):
        convert.RUN_STATUS.encode(["pending"])  # type: ignore[arg-type]


def test_unknown_enum_numbers_from_a_newer_server_decode_as_unspecified() -> None:
    assert convert.RUN_STATUS.decode(99) == convert.UNSPECIFIED


async def test_unknown_strings_raise_before_any_call_is_made() -> None:
    # Nothing listens on port 1: reaching the network would fail with UnavailableError.
    client = turnstile.get_client("127.0.0.1:1", timeout=1)
    try:
        with pytest.raises(ValueError, match="strategy"):
            await client.runs.create("t", "agent", multitask_strategy="later")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cancel action"):
            await client.runs.cancel("t", "r", action="stop")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="stream mode"):
            client.runs.stream("t", "agent", stream_mode="trace")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="thread status"):
            await client.threads.search(status="done")  # type: ignore[arg-type]
    finally:
        await client.close()


# --- errors --------------------------------------------------------------------------------


def test_thread_busy_parses_into_conflict_error_with_reason_and_metadata() -> None:
    info = error_details_pb2.ErrorInfo(
        reason="THREAD_BUSY",
        domain="turnstile.v1",
        metadata={"inflight_run_ids": "r1,r2", "thread_id": "t1"},
    )
    error = error_from_status(
        grpc.StatusCode.ABORTED,
        "thread t1 is busy",
        trailers(code_pb2.ABORTED, "thread t1 is busy", info, extra=[("x-other", "1")]),
    )
    assert type(error) is turnstile.ConflictError
    assert isinstance(error, turnstile.TurnstileError)
    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "THREAD_BUSY"
    assert error.domain == "turnstile.v1"
    assert error.metadata == {"inflight_run_ids": "r1,r2", "thread_id": "t1"}
    assert error.message == "thread t1 is busy"
    assert "THREAD_BUSY" in str(error)


def test_error_info_is_found_after_other_details() -> None:
    retry = error_details_pb2.RetryInfo()
    info = error_details_pb2.ErrorInfo(reason="RUN_NOT_FOUND", metadata={"run_id": "r9"})
    error = error_from_status(
        grpc.StatusCode.NOT_FOUND, "", trailers(code_pb2.NOT_FOUND, "run r9 not found", retry, info)
    )
    assert type(error) is turnstile.NotFoundError
    assert error.reason == "RUN_NOT_FOUND"
    assert error.metadata == {"run_id": "r9"}
    assert error.message == "run r9 not found"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.CANCELLED, turnstile.RequestCancelledError),
        (grpc.StatusCode.UNKNOWN, turnstile.UnknownError),
        (grpc.StatusCode.INVALID_ARGUMENT, turnstile.InvalidArgumentError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, turnstile.DeadlineExceededError),
        (grpc.StatusCode.NOT_FOUND, turnstile.NotFoundError),
        (grpc.StatusCode.ALREADY_EXISTS, turnstile.AlreadyExistsError),
        (grpc.StatusCode.PERMISSION_DENIED, turnstile.PermissionDeniedError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, turnstile.ResourceExhaustedError),
        (grpc.StatusCode.FAILED_PRECONDITION, turnstile.FailedPreconditionError),
        (grpc.StatusCode.ABORTED, turnstile.ConflictError),
        (grpc.StatusCode.OUT_OF_RANGE, turnstile.OutOfRangeError),
        (grpc.StatusCode.UNIMPLEMENTED, turnstile.UnimplementedError),
        (grpc.StatusCode.INTERNAL, turnstile.InternalError),
        (grpc.StatusCode.UNAVAILABLE, turnstile.UnavailableError),
        (grpc.StatusCode.DATA_LOSS, turnstile.DataLossError),
        (grpc.StatusCode.UNAUTHENTICATED, turnstile.UnauthenticatedError),
    ],
)
def test_every_status_code_has_its_own_exception_class(
    code: Any, cls: type[turnstile.TurnstileError]
) -> None:
    info = error_details_pb2.ErrorInfo(reason="SOME_REASON", domain="turnstile.v1")
    error = error_from_status(code, "m", trailers(code.value[0], "m", info))
    assert type(error) is cls
    assert cls.code == code
    assert error.code == code
    assert error.reason == "SOME_REASON"


def test_an_error_without_details_has_empty_reason_and_metadata() -> None:
    error = error_from_status(grpc.StatusCode.UNAVAILABLE, "connection refused", None)
    assert type(error) is turnstile.UnavailableError
    assert error.reason == ""
    assert error.domain == ""
    assert error.metadata == {}
    assert error.message == "connection refused"


def test_garbage_in_the_details_trailer_is_ignored() -> None:
    error = error_from_status(
        grpc.StatusCode.INTERNAL, "internal error", [(STATUS_DETAILS_KEY, b"\xff\xfe not proto")]
    )
    assert type(error) is turnstile.InternalError
    assert error.reason == ""


def test_a_status_without_error_info_keeps_the_code_and_message() -> None:
    error = error_from_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad id",
        trailers(code_pb2.INVALID_ARGUMENT, "bad id", error_details_pb2.RetryInfo()),
    )
    assert type(error) is turnstile.InvalidArgumentError
    assert error.reason == ""
    assert error.message == "bad id"


# --- paging --------------------------------------------------------------------------------


class Listing:
    """A listing of `total` numbers served in pages of at most `cap` items."""

    def __init__(self, total: int, cap: int) -> None:
        self.items = list(range(total))
        self.cap = cap
        self.requests: list[tuple[int, str]] = []

    async def fetch(self, page_size: int, page_token: str) -> tuple[Sequence[int], str]:
        self.requests.append((page_size, page_token))
        start = int(page_token or 0)
        end = start + min(page_size, self.cap)
        return self.items[start:end], str(end) if end < len(self.items) else ""


@pytest.mark.parametrize(
    ("total", "cap", "limit", "offset", "expected"),
    [
        (25, 50, 10, 0, list(range(10))),
        (25, 50, 10, 20, list(range(20, 25))),
        (25, 4, 10, 3, list(range(3, 13))),
        (25, 50, 10, 30, []),
        (3, 50, 10, 0, [0, 1, 2]),
    ],
)
async def test_limit_and_offset_page_through_the_listing(
    total: int, cap: int, limit: int, offset: int, expected: list[int]
) -> None:
    listing = Listing(total, cap)
    assert await page_through(listing.fetch, limit=limit, offset=offset) == expected


async def test_paging_asks_only_for_what_it_needs_and_follows_tokens() -> None:
    listing = Listing(100, 4)
    assert await page_through(listing.fetch, limit=6, offset=2) == [2, 3, 4, 5, 6, 7]
    assert listing.requests == [(8, ""), (4, "4")]


async def test_a_zero_limit_makes_no_call_and_negative_values_raise() -> None:
    listing = Listing(10, 10)
    assert await page_through(listing.fetch, limit=0, offset=0) == []
    assert listing.requests == []
    with pytest.raises(ValueError, match="limit"):
        await page_through(listing.fetch, limit=-1, offset=0)
    with pytest.raises(ValueError, match="offset"):
        await page_through(listing.fetch, limit=1, offset=-1)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 0),
        (1, 999_999_999),
        (1_764_658_000, 123_456_789),
        (-1, 5),
        (-62_135_596_800, 0),  # 0001-01-01, the first valid second
        (253_402_300_799, 999_999_999),  # the last valid nanosecond of 9999
    ],
)
def test_timestamps_read_as_protobuf_reads_them(seconds: int, nanos: int) -> None:
    stamp = timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    assert convert.iso(stamp) == stamp.ToDatetime(tzinfo=datetime.UTC).isoformat()


@pytest.mark.parametrize(
    ("seconds", "nanos"), [(253_402_300_800, 0), (-62_135_596_801, 0), (0, -1), (0, 10**9)]
)
def test_an_invalid_timestamp_is_refused_as_protobuf_refuses_it(seconds: int, nanos: int) -> None:
    with pytest.raises(ValueError):
        convert.iso(timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))
