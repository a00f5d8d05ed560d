"""Values as JSON text (`turnstile-values-encoding: json`): the SDK gets the same dicts as from
a `Struct`, and callers that do not ask (grpcurl, `buf curl`) keep getting a `Struct`."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import support
from turnstile import get_sync_client
from turnstile._convert import struct_to_dict, value_to_python, values_to_dict
from turnstile._transport import VALUES_AS_JSON
from turnstile.v1 import (
    run_service_pb2,
    run_service_pb2_grpc,
    thread_service_pb2,
    thread_service_pb2_grpc,
)
from turnstile_server.api import json_values
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.graph import RunContext
from turnstile_server.state import ThreadState

TIMEOUT = 10.0


def _integral(data: Any) -> Any:
    """JSON data with its integral numbers as Python ints, as a graph may write them."""
    if isinstance(data, float) and data.is_integer():
        return int(data)
    if isinstance(data, dict):
        return {key: _integral(item) for key, item in data.items()}
    if isinstance(data, list):
        return [_integral(item) for item in data]
    return data


async def writes(state: dict[str, Any], ctx: RunContext) -> AsyncIterator[dict[str, Any]]:
    """Yields input `update` as its one step, integral numbers as ints except under `kept`."""
    update = ctx.input.get("update", {})
    yield {key: item if key == "kept" else _integral(item) for key, item in update.items()}


@pytest.fixture
async def app(database: str) -> AsyncIterator[App]:
    graphs = support.registry()
    graphs.register("writes", writes)
    server = await App.start(ServerConfig(host="127.0.0.1", port=0, database=database), graphs)
    yield server
    await server.stop(grace=0)


# --- what Hypothesis draws -------------------------------------------------------------------

numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**60), 2**60).map(float)
scalars = st.none() | st.booleans() | numbers | st.text(max_size=20)
json_data = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["human", "ai"]),
            "content": st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=3),
        },
        optional={
            # A few ids, so that an update often replaces a message the thread already holds.
            "id": st.sampled_from(["m1", "m2", "m3"]),
            "x_extra": json_data,
        },
    ),
    max_size=5,
)
updates = st.fixed_dictionaries(
    {"messages": messages},
    optional={"kept": json_data, "other": json_data, "steps": numbers},
)


def same(left: Any, right: Any) -> bool:
    """Equal and of the same types all the way down (`1 == 1.0 == True` do not count)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(same(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, float):
        return left == right and math.copysign(1.0, left) == math.copysign(1.0, right)
    return bool(left == right)


# --- the property ----------------------------------------------------------------------------


class Raw:
    """Generated stubs on a synchronous channel: the values as a `Struct`, or as JSON text."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.runs = run_service_pb2_grpc.RunServiceStub(channel)
        self.threads = thread_service_pb2_grpc.ThreadServiceStub(channel)

    def both(self, method: Any, request: Any, pick: Any) -> tuple[Any, Any]:
        """The call's values decoded from the `Struct` and from the JSON text."""
        plain = pick(method(request, timeout=TIMEOUT))
        as_json = pick(method(request, timeout=TIMEOUT, metadata=[VALUES_AS_JSON]))
        assert not plain.values_json
        assert as_json.values_json and not as_json.values.fields
        return struct_to_dict(plain.values), values_to_dict(as_json)


@pytest.fixture
def raw(app: App) -> Iterator[Raw]:
    with grpc.insecure_channel(app.address) as channel:
        yield Raw(channel)


async def test_the_sdk_gets_the_same_values_from_json_text_as_from_a_struct(
    app: App, raw: Raw
) -> None:
    sdk = get_sync_client(url=app.address)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(updates, min_size=1, max_size=3))
    def check(steps: list[dict[str, Any]]) -> None:
        thread_id = str(uuid.uuid4())
        sdk.threads.create(thread_id=thread_id)
        for update in steps:
            result = sdk.runs.wait_run(thread_id, "writes", input={"update": update})
            run_id = result.run["run_id"]
            assert result.run["status"] == "success", result.run
            join = run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=run_id)
            plain, as_json = raw.both(raw.runs.JoinRun, join, lambda r: r)
            assert same(plain, as_json) and same(result.values, plain)
            assert same(sdk.runs.join(thread_id, run_id), plain)
            state = thread_service_pb2.GetThreadStateRequest(thread_id=thread_id)
            plain, as_json = raw.both(raw.threads.GetThreadState, state, lambda r: r.checkpoint)
            assert same(plain, as_json) and same(sdk.threads.get_state(thread_id)["values"], plain)
            # The run's stream, replayed: its `values` events as JSON text to the SDK.
            replay = run_service_pb2.JoinRunStreamRequest(thread_id=thread_id, run_id=run_id)
            plain_events = [
                (e.event, value_to_python(e.data), e.seq)
                for r in raw.runs.JoinRunStream(replay, timeout=TIMEOUT)
                for e in r.events
            ]
            assert [e for e, _, _ in plain_events].count("values") == 2
            json_events = [
                e
                for r in raw.runs.JoinRunStream(replay, timeout=TIMEOUT, metadata=[VALUES_AS_JSON])
                for e in r.events
            ]
            assert [bool(e.data_json) for e in json_events] == [
                e == "values" for e, _, _ in plain_events
            ]
            parts = list(sdk.runs.join_stream(thread_id, run_id))
            assert same([(p.event, p.data, p.seq) for p in parts], plain_events)
            get = thread_service_pb2.GetThreadRequest(thread_id=thread_id)
            plain, as_json = raw.both(raw.threads.GetThread, get, lambda r: r.thread)
            assert same(plain, as_json) and same(sdk.threads.get(thread_id)["values"], plain)
        history = thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id, page_size=20)
        plain_page = raw.threads.GetThreadHistory(history, timeout=TIMEOUT)
        json_page = raw.threads.GetThreadHistory(
            history, timeout=TIMEOUT, metadata=[VALUES_AS_JSON]
        )
        sdk_page = sdk.threads.get_history(thread_id, limit=20)
        assert len(plain_page.checkpoints) == len(json_page.checkpoints) == len(sdk_page)
        for p, j, s in zip(plain_page.checkpoints, json_page.checkpoints, sdk_page, strict=True):
            assert same(struct_to_dict(p.values), values_to_dict(j))
            assert same(s["values"], struct_to_dict(p.values))

    try:
        await asyncio.to_thread(check)  # the server serves on this loop meanwhile
    finally:
        await asyncio.to_thread(sdk.close)


def test_the_sdk_decodes_a_struct_when_the_server_sends_no_json_text() -> None:
    """A server that predates `values_json` (or ignores the metadata) still answers a `Struct`."""
    response = run_service_pb2.WaitRunResponse()
    response.values.update({"messages": [{"type": "ai", "content": "hi"}], "steps": 2})
    assert same(
        values_to_dict(response), {"messages": [{"type": "ai", "content": "hi"}], "steps": 2.0}
    )


def test_json_text_writes_integers_as_doubles_and_refuses_what_a_struct_refuses() -> None:
    assert json_values.values_json({"n": 5, "t": True, "m": [{"x": [1, 2.5]}]}) == (
        b'{"n":5.0,"t":true,"m":[{"x":[1.0,2.5]}]}'
    )
    with pytest.raises(ValueError, match="not a JSON number"):
        json_values.values_json({"n": math.nan})
    with pytest.raises(OverflowError):
        json_values.values_json({"n": 10**400})


def test_a_replaced_message_is_not_answered_from_the_cached_text() -> None:
    state = ThreadState({"messages": [{"type": "human", "content": "a", "id": "m1"}]})
    state.apply({"messages": [{"type": "ai", "content": "b", "id": "m2"}]})
    first = json_values.state_json(state)
    state.apply({"messages": [{"type": "ai", "content": "c", "id": "m3"}]})
    appended = json_values.state_json(state)  # reuses the text of the first two
    assert appended.startswith(first[: first.index(b"]")]) and b'"c"' in appended
    state.apply({"messages": [{"type": "ai", "content": "B", "id": "m2"}]})  # not the first
    replaced = json_values.state_json(state)
    assert b'"B"' in replaced and b'"b"' not in replaced
    assert orjson.loads(replaced) == {
        "messages": [
            {"type": "human", "content": "a", "id": "m1"},
            {"type": "ai", "content": "B", "id": "m2"},
            {"type": "ai", "content": "c", "id": "m3"},
        ]
    }


def test_a_list_sharing_only_its_first_messages_reuses_their_text_and_encodes_the_rest() -> None:
    # A run's own state and the store's cached one hold their own objects for the messages
    # the run added: the next run's list matches the text seen last only up to those.
    base = [{"type": "human", "content": f"m{i}", "id": f"m{i}"} for i in range(40)]
    run_copy = [*base, {"type": "ai", "content": "run's", "id": "a"}]
    assert json_values.values_json({"messages": run_copy}) == orjson.dumps({"messages": run_copy})
    cached = [*base, {"type": "ai", "content": "cache's", "id": "a"}, {"type": "human", "id": "b"}]
    assert json_values.values_json({"messages": cached}) == orjson.dumps({"messages": cached})
    shorter = base[:7]
    assert json_values.values_json({"messages": shorter}) == orjson.dumps({"messages": shorter})


@given(
    st.lists(
        st.tuples(st.sampled_from(["append", "replace", "truncate", "fork"]), st.integers(0, 30)),
        min_size=1,
        max_size=25,
    )
)
@settings(max_examples=200, deadline=None)
def test_message_lists_sharing_objects_any_way_encode_as_a_fresh_encoding_would(
    steps: list[tuple[str, int]],
) -> None:
    first = {"type": "human", "content": "first", "id": "first"}
    messages: list[dict[str, Any]] = [first]
    for number, (operation, at) in enumerate(steps):
        new = {"type": "ai", "content": f"{operation} {number}", "id": str(number)}
        if operation == "replace" and len(messages) > 1:
            messages = list(messages)
            messages[1 + at % (len(messages) - 1)] = new  # the first stays: the same entry
        elif operation in ("append", "replace"):
            messages = [*messages, new]
        elif operation == "truncate":
            messages = messages[: max(1, at % len(messages))]
        else:  # the same texts in new objects, after the first `at`
            messages = messages[:at] + [dict(m) for m in messages[at:]] or [first]
        assert json_values.values_json({"messages": messages}) == orjson.dumps(
            {"messages": messages}
        )
