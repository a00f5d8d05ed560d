"""Hostile input: every RPC answers a specific code with an `ErrorInfo`, never INTERNAL or
UNKNOWN, never a traceback, and the server keeps serving.

The fuzz walks the request messages of every RPC of the three services from their descriptors
and sends what Hypothesis draws, field by field (ids of existing and unknown objects, junk,
huge and unicode strings, boundary and out-of-range numbers, undefined enum numbers, JSON of
the wrong shape, nested too deep or near the size limit) or as raw bytes. Below it, the bugs it
found, kept as plain regression tests.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import descriptor, json_format, message_factory, struct_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import support
from tests.rpc import DOMAIN, Stubs, error_info, human_input, struct
from turnstile.v1 import (
    assistant_service_pb2,
    run_pb2,
    run_service_pb2,
    thread_service_pb2,
)
from turnstile_server.api.rpc_errors import MAX_MESSAGE_BYTES as MAX_DETAILS_BYTES
from turnstile_server.app import App
from turnstile_server.config import ServerConfig
from turnstile_server.state import MAX_JSON_DEPTH

T = TypeVar("T")

SIZE_LIMIT = ServerConfig().max_message_bytes
"""The default limit on a request's size, 1 MiB."""
TYPED = 800
RAW = 200
THREADS = 6
CALL_TIMEOUT = 10.0
"""Deadline of a call that should answer at once: hitting it is a hang, and a failure."""
BLOCKING_TIMEOUT = 0.3
"""Deadline of a call that waits for a run (wait, join, streams): hitting it is fine."""
BLOCKING = {"WaitRun", "JoinRun", "StreamRun", "JoinRunStream", "WatchThread"}
SPECIFIC = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
}


@dataclass(frozen=True)
class Rpc:
    """One RPC as the descriptors describe it."""

    name: str
    path: str
    request: descriptor.Descriptor
    response: type[Message]
    streaming: bool


RPCS = [
    Rpc(
        name=method.name,
        path=f"/{service.full_name}/{method.name}",
        request=method.input_type,
        response=message_factory.GetMessageClass(method.output_type),
        streaming=method.server_streaming,
    )
    for module in (assistant_service_pb2, thread_service_pb2, run_service_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


def test_the_fuzz_covers_every_rpc_of_the_three_services() -> None:
    names = {rpc.name for rpc in RPCS}
    assert len(RPCS) == 4 + 9 + 9, sorted(names)
    assert {"StreamRun", "JoinRunStream", "WatchThread"} <= {r.name for r in RPCS if r.streaming}


# --- a real server on its own loop, so that a synchronous @given can call it ---------------


@dataclass(frozen=True)
class Known:
    """Objects that exist on the server, so that requests also reach past the lookups."""

    thread_ids: list[str]
    run_ids: list[str]
    """The finished run of each of `thread_ids`, in the same order."""
    spare_thread_ids: list[str]
    assistant_ids: list[str]


class Server:
    """The production `App` on 127.0.0.1:0, served by an event loop in a background thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, app: App, channel: grpc.aio.Channel):
        self.loop = loop
        self.app = app
        self.channel = channel

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@contextmanager
def background_server(database: str) -> Iterator[Server]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed server", daemon=True)
    thread.start()

    async def start() -> tuple[App, grpc.aio.Channel]:
        app = await App.start(
            ServerConfig(host="127.0.0.1", port=0, database=database), support.registry()
        )
        # Responses are not what is fuzzed: a page of threads with 1 MiB metadata is allowed.
        channel = grpc.aio.insecure_channel(
            app.address, options=[("grpc.max_receive_message_length", -1)]
        )
        return app, channel

    app, channel = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    server = Server(loop, app, channel)
    try:
        yield server
    finally:
        server.run(channel.close())
        server.run(app.stop(grace=0))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def seed(channel: grpc.aio.Channel) -> Known:
    """Threads with a finished run each, spare threads, and assistants of `echo`."""
    stubs = Stubs(channel)
    threads: list[str] = []
    runs: list[str] = []
    for _ in range(THREADS):
        created = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
        threads.append(created.thread.thread_id)
        done = await stubs.runs.WaitRun(
            run_service_pb2.WaitRunRequest(
                thread_id=created.thread.thread_id, assistant_id="echo", input=human_input("hi")
            )
        )
        runs.append(done.run.run_id)
    spares: list[str] = []
    for _ in range(THREADS):
        created = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
        spares.append(created.thread.thread_id)
    assistants = ["echo", "failing"]
    for _ in range(3):
        made = await stubs.assistants.CreateAssistant(
            assistant_service_pb2.CreateAssistantRequest(graph_id="echo")
        )
        assistants.append(made.assistant.assistant_id)
    return Known(threads, runs, spares, assistants)


# --- what Hypothesis draws -------------------------------------------------------------------
#
# A request has up to three hostile fields and sane values in the others, so that most requests
# get past the first checks and the hostile fields reach the code behind them.

SIZES = [1_000, 100_000, SIZE_LIMIT - 4_096, SIZE_LIMIT + 64]
huge_strings = st.tuples(st.sampled_from(SIZES), st.sampled_from(["x", "é", "\U0001f4a5"])).map(
    lambda pair: pair[1] * (pair[0] // len(pair[1].encode()))
)
junk_strings = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.sampled_from(
        ["null", " ", "\x00", "../../etc/passwd", "'; DROP TABLE runs; --", "%s%n", "echo\x00"]
    ),
    st.text(max_size=40),
    huge_strings,
)


def hostile_ids(known: list[str]) -> st.SearchStrategy[str]:
    """Existing ids in another spelling, unknown UUIDs, junk."""
    return st.one_of(
        st.sampled_from(known).map(str.upper),
        st.sampled_from(known).map(lambda known_id: f"{{{known_id}}}"),
        st.uuids().map(str),
        junk_strings,
    )


def page_tokens() -> st.SearchStrategy[str]:
    forged = st.one_of(st.integers(), st.text(max_size=10)).map(
        lambda cursor: base64.urlsafe_b64encode(f"c1:{cursor}".encode()).decode()
    )
    return st.one_of(forged, junk_strings)


def integers(bits: int) -> st.SearchStrategy[int]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    edges = [0, 1, -1, 1000, 1001, 2**31 - 1, -(2**31), high, low]
    return st.one_of(
        st.sampled_from([e for e in edges if low <= e <= high]), st.integers(low, high)
    )


hostile_doubles = st.one_of(
    st.sampled_from([-0.0, -1.0, 1e-9, 0.05, 366 * 86400.0, 366 * 86400.0 + 1, 1e308]),
    st.sampled_from([math.inf, -math.inf, math.nan]),
    st.floats(),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.integers(-(2**63), 2**63),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@dataclass(frozen=True)
class Deep:
    """JSON nested `depth` levels deep (objects or lists), built in place: the Python protobuf
    runtime refuses to copy a message nested this deep."""

    depth: int
    lists: bool


# Around our limit, around where decoders give up (objects at ~32 levels, lists at ~49), beyond.
depths = st.one_of(
    st.sampled_from([MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 30, 31, 32, 33]),
    st.sampled_from([47, 48, 49, 50, 64, 100, 200]),
    st.integers(1, 200),
)


@dataclass(frozen=True)
class Huge:
    """A JSON object holding one huge string."""

    text: str


roles = st.sampled_from(["user", "human", "ai", "assistant", "tool", "system", "wizard", ""])
messages = st.fixed_dictionaries(
    {},
    optional={
        "role": roles | json_values,
        "type": roles | json_values,
        "content": st.text(max_size=20) | json_values,
        "id": st.text(max_size=10) | json_values,
        "name": st.text(max_size=10) | json_values,
        "tool_call_id": st.text(max_size=10) | json_values,
        "tool_calls": json_values
        | st.lists(
            st.fixed_dictionaries(
                {}, optional={"name": json_values, "args": json_values, "id": json_values}
            ),
            max_size=2,
        ),
    },
)
hostile_objects = st.one_of(
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    st.builds(Deep, depths, st.booleans()),
    st.builds(Huge, huge_strings),
)
hostile_inputs = st.one_of(
    hostile_objects,
    st.fixed_dictionaries(
        {"messages": st.one_of(st.lists(messages, max_size=3), messages, json_values)},
        optional={"steps": json_values},
    ),
)
sane_inputs = st.builds(
    lambda text: {"messages": [{"role": "user", "content": text}]}, st.text(max_size=20)
)
sane_objects = st.dictionaries(
    st.sampled_from(["user", "tag", "configurable"]), st.text(max_size=10), max_size=2
)


def sane(field: descriptor.FieldDescriptor, known: Known) -> st.SearchStrategy[Any]:
    """A value the server accepts, naming existing objects where the field names one."""
    if field.message_type is not None and field.message_type.full_name == COMMAND:
        return st.just(OMIT)  # a command is for a LangGraph graph: the fuzz's graphs refuse it
    if field.message_type is not None:
        return sane_inputs if field.name == "input" else sane_objects
    if field.enum_type is not None:
        defined = st.sampled_from([value.number for value in field.enum_type.values])
        return st.lists(defined, max_size=2) if field.is_repeated else defined
    pools = {
        "thread_id": known.thread_ids,
        "run_id": known.run_ids,
        "assistant_id": known.assistant_ids,
        "graph_id": ["echo", "failing"],
    }
    if field.name in pools:
        return st.sampled_from(pools[field.name])
    if field.is_repeated:  # interrupt_before, interrupt_after: LangGraph-only as well
        return st.just([])
    match field.type:
        case descriptor.FieldDescriptor.TYPE_STRING:
            return st.uuids().map(str) if field.name == "request_id" else st.just("")
        case descriptor.FieldDescriptor.TYPE_INT32 | descriptor.FieldDescriptor.TYPE_INT64:
            return st.integers(0, 20)
        case descriptor.FieldDescriptor.TYPE_DOUBLE:
            return st.just(0.0)
        case descriptor.FieldDescriptor.TYPE_BOOL:
            return st.booleans()
    raise AssertionError(f"no sane value for {field.full_name}")


def hostile(field: descriptor.FieldDescriptor, known: Known) -> st.SearchStrategy[Any]:
    """A value of the field's type that is wrong, out of range, unknown, huge or deep."""
    if field.message_type is not None and field.message_type.full_name == COMMAND:
        return hostile_commands
    if field.message_type is not None:
        assert field.message_type.full_name == "google.protobuf.Struct", field.full_name
        return hostile_inputs if field.name == "input" else hostile_objects
    if field.enum_type is not None:
        return st.lists(integers(32), max_size=4) if field.is_repeated else integers(32)
    if field.is_repeated:
        assert field.type == descriptor.FieldDescriptor.TYPE_STRING, field.full_name
        return node_names
    assert not field.is_repeated, field.full_name
    match field.type:
        case descriptor.FieldDescriptor.TYPE_STRING:
            return hostile_strings(field.name, known)
        case descriptor.FieldDescriptor.TYPE_INT32:
            return integers(32)
        case descriptor.FieldDescriptor.TYPE_INT64:
            return integers(64)
        case descriptor.FieldDescriptor.TYPE_DOUBLE:
            return hostile_doubles
        case descriptor.FieldDescriptor.TYPE_BOOL:
            return st.booleans()
    raise AssertionError(f"no hostile value for {field.full_name}")


def hostile_strings(name: str, known: Known) -> st.SearchStrategy[str]:
    if name == "thread_id":
        return hostile_ids(known.thread_ids)
    if name == "run_id":
        return hostile_ids(known.run_ids)
    if name == "assistant_id":
        return st.one_of(hostile_ids(known.assistant_ids), st.sampled_from(["agent", "ECHO"]))
    if name == "graph_id":
        return st.one_of(st.sampled_from(["agent", "ECHO", "gated"]), junk_strings)
    if name == "request_id":
        return st.one_of(st.sampled_from(known.run_ids), junk_strings)
    if name == "page_token":
        return page_tokens()
    return junk_strings


OMIT = object()
COMMAND = "turnstile.v1.Command"
node_names = st.lists(st.one_of(st.sampled_from(["*", "echo", "tools"]), junk_strings), max_size=3)
interrupt_ids = st.one_of(st.text("0123456789abcdef", min_size=32, max_size=32), junk_strings)
hostile_commands = st.fixed_dictionaries(
    {},
    optional={
        "resume": json_values,
        "resume_by_id": st.dictionaries(interrupt_ids, json_values, max_size=3),
        "update": hostile_objects,
        "goto": node_names,
    },
)


def sane_or_left_out(
    field: descriptor.FieldDescriptor, known: Known, value: str | None = None
) -> Any:
    """A sane value (`value` if given) or, 1 in 6 times, the field left out."""
    given = sane(field, known) if value is None else st.just(value)
    left_out = st.sampled_from([False] * 5 + [True])
    return left_out.flatmap(lambda omit: st.just(OMIT) if omit else given)


def fill_value(value: struct_pb2.Value, data: Any) -> None:
    """Sets a Value in place (NaN included: the client must be able to send it)."""
    if data is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(data, bool):
        value.bool_value = data
    elif isinstance(data, int | float):
        value.number_value = float(data)
    elif isinstance(data, str):
        value.string_value = data
    elif isinstance(data, list):
        value.list_value.SetInParent()
        for item in data:
            fill_value(value.list_value.values.add(), item)
    else:
        fill_struct(value.struct_value, data)


def fill_struct(target: struct_pb2.Struct, data: dict[str, Any] | Deep | Huge) -> None:
    target.SetInParent()
    if isinstance(data, Huge):
        target.fields["text"].string_value = data.text
    elif isinstance(data, Deep):
        value = target.fields["deep"]
        for _ in range(data.depth):
            value = value.list_value.values.add() if data.lists else value.struct_value.fields["k"]
        value.string_value = "bottom"
    else:
        for key, item in data.items():
            fill_value(target.fields[key], item)


def fill_command(target: Any, data: dict[str, Any]) -> None:
    """Sets a `Command` in place from its drawn parts."""
    target.SetInParent()
    if "resume" in data:
        fill_value(target.resume, data["resume"])
    for key, item in data.get("resume_by_id", {}).items():
        fill_value(target.resume_by_id[key], item)
    if "update" in data:
        fill_struct(target.update, data["update"])
    target.goto.extend(data.get("goto", []))


def build(rpc: Rpc, fields: dict[str, Any]) -> bytes:
    request = message_factory.GetMessageClass(rpc.request)()
    for name, value in fields.items():
        field = rpc.request.fields_by_name[name]
        if value is OMIT:
            continue
        if field.message_type is not None and field.message_type.full_name == COMMAND:
            fill_command(getattr(request, name), value)
        elif field.message_type is not None:
            fill_struct(getattr(request, name), value)
        elif field.is_repeated:
            getattr(request, name).extend(value)
        else:
            setattr(request, name, value)
    payload: bytes = request.SerializeToString()
    return payload


def typed_requests(known: Known) -> st.SearchStrategy[tuple[Rpc, bytes]]:
    """An RPC and a request with up to three hostile fields, the others sane or left out.

    A sane `thread_id` and `run_id` name a run and its own thread; `DeleteThread` gets spare
    threads, so that the others are still there for the rest of the fuzz.
    """

    def for_rpc(rpc: Rpc) -> st.SearchStrategy[tuple[Rpc, bytes]]:
        def with_hostile(
            names: frozenset[str], pair: tuple[str, str], spare: str
        ) -> st.SearchStrategy[tuple[Rpc, bytes]]:
            chosen = {"thread_id": spare} if rpc.name == "DeleteThread" else {}
            if "run_id" in rpc.request.fields_by_name:
                chosen = {"thread_id": pair[0], "run_id": pair[1]}
            fields = st.fixed_dictionaries(
                {
                    f.name: hostile(f, known)
                    if f.name in names
                    else sane_or_left_out(f, known, chosen.get(f.name))
                    for f in rpc.request.fields
                }
            )
            return fields.map(lambda drawn: (rpc, build(rpc, drawn)))

        names = st.frozensets(st.sampled_from([f.name for f in rpc.request.fields]), max_size=3)
        pairs = st.sampled_from(list(zip(known.thread_ids, known.run_ids, strict=True)))
        spares = st.sampled_from(known.spare_thread_ids)
        return st.tuples(names, pairs, spares).flatmap(lambda drawn: with_hostile(*drawn))

    return st.sampled_from(RPCS).flatmap(for_rpc)


def raw_requests(known: Known) -> st.SearchStrategy[tuple[Rpc, bytes]]:
    """An RPC and random bytes, or a request's bytes with some of them overwritten."""
    mangled = st.tuples(
        typed_requests(known), st.integers(0, 64), st.binary(min_size=1, max_size=8)
    )
    return st.one_of(
        mangled.map(lambda t: (t[0][0], t[0][1][: t[1]] + t[2] + t[0][1][t[1] + len(t[2]) :])),
        st.tuples(st.sampled_from(RPCS), st.binary(max_size=64)),
    )


# --- the property --------------------------------------------------------------------------


async def call(channel: grpc.aio.Channel, rpc: Rpc, payload: bytes) -> None:
    """Sends raw bytes and decodes the answer as clients will: a run's stream to its end, a
    thread's (which never ends) up to its first message."""
    timeout = BLOCKING_TIMEOUT if rpc.name in BLOCKING else CALL_TIMEOUT
    if not rpc.streaming:
        answer = await channel.unary_unary(rpc.path)(payload, timeout=timeout)
        rpc.response.FromString(answer)
        return
    stream = channel.unary_stream(rpc.path)(payload, timeout=timeout)
    try:
        async for message in stream:
            rpc.response.FromString(message)
            if rpc.name == "WatchThread":
                break
    finally:
        stream.cancel()


def check_failure(rpc: Rpc, payload: bytes, error: grpc.aio.AioRpcError) -> None:
    code, details = error.code(), error.details() or ""
    assert "Traceback" not in details and 'File "' not in details, details
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and rpc.name in BLOCKING:
        return  # it waits for a run: our own short deadline
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(payload) > SIZE_LIMIT:
        assert "larger than max" in details, details  # gRPC's own, before our code
        return
    assert code in SPECIFIC, (code, details)
    info = error_info(error)
    assert info.domain == DOMAIN and info.reason, info
    assert len(details.encode()) <= MAX_DETAILS_BYTES, details


@pytest.mark.timeout(120)
def test_fuzzed_requests_get_specific_errors_and_the_server_keeps_serving(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with background_server(database) as server:
        known = server.run(seed(server.channel))

        def answers_specifically(drawn: tuple[Rpc, bytes]) -> None:
            rpc, payload = drawn
            try:
                server.run(call(server.channel, rpc, payload))
            except grpc.aio.AioRpcError as error:
                check_failure(rpc, payload, error)

        for strategy, examples in [(typed_requests, TYPED), (raw_requests, RAW)]:
            fuzz = settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.data_too_large,
                    HealthCheck.large_base_example,
                ],
            )
            fuzz(given(strategy(known))(answers_specifically))()
        server.run(still_serving(server.channel))
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not logged, [r.getMessage() for r in logged]


async def still_serving(channel: grpc.aio.Channel) -> None:
    health = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stubs = Stubs(channel)
    thread = await stubs.threads.CreateThread(
        thread_service_pb2.CreateThreadRequest(), timeout=CALL_TIMEOUT
    )
    done = await stubs.runs.WaitRun(
        run_service_pb2.WaitRunRequest(
            thread_id=thread.thread.thread_id, assistant_id="echo", input=human_input("still?")
        ),
        timeout=CALL_TIMEOUT,
    )
    assert done.run.status == run_pb2.RUN_STATUS_SUCCESS
    assert done.values["messages"][-1]["content"] == "still?"


# --- what the fuzz found, kept as plain tests ------------------------------------------------


@pytest.fixture
async def stubs(app: App) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(app.address) as channel:
        yield Stubs(channel)


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def assert_specific(
    error: grpc.aio.AioRpcError, code: grpc.StatusCode, reason: str, **metadata: str
) -> None:
    info = error_info(error)
    assert (info.code, info.reason, info.domain) == (code, reason, DOMAIN), info
    assert "Traceback" not in info.message, info
    assert len(info.message.encode()) <= MAX_DETAILS_BYTES, info
    for key, value in metadata.items():
        assert info.metadata.get(key) == value, (key, info.metadata)


def nested(depth: int, *, lists: bool = False) -> dict[str, Any]:
    """A JSON object whose objects (or lists) nest `depth` levels deep, itself included."""
    bottom: Any = "bottom"
    for _ in range(depth - 1):
        bottom = [bottom] if lists else {"k": bottom}
    return {"deep": bottom}


def as_json(message: Message) -> Any:
    return json_format.MessageToDict(message)


def deep_struct(depth: int, *, lists: bool = False) -> struct_pb2.Struct:
    """`nested(depth)` as a Struct, built in place (copying one this deep fails)."""
    message = struct_pb2.Struct()
    fill_struct(message, Deep(depth - 1, lists))
    return message


async def test_undecodable_bytes_are_invalid_argument_malformed_request_on_every_rpc(
    app: App,
) -> None:
    # Found by the fuzz: gRPC answered UNKNOWN "Unexpected <class 'DecodeError'>: ...".
    async with grpc.aio.insecure_channel(app.address) as channel:
        for rpc in RPCS:
            if rpc.streaming:
                stream = channel.unary_stream(rpc.path)(b"\xff\xff\xff", timeout=CALL_TIMEOUT)
                error = await failure(anext(aiter(stream)))
            else:
                error = await failure(channel.unary_unary(rpc.path)(b"\xff\xff\xff"))
            assert_specific(error, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
            assert rpc.name in error.details(), error.details()


@pytest.mark.parametrize("depth", [34, 100, 200])
async def test_json_nested_past_what_protobuf_decodes_is_invalid_argument(
    stubs: Stubs, depth: int
) -> None:
    # Found by the fuzz: a Struct nested this deep does not decode (upb stops at 100 messages).
    request = thread_service_pb2.CreateThreadRequest()
    fill_struct(request.metadata, Deep(depth, lists=False))

    error = await failure(stubs.threads.CreateThread(request))

    assert_specific(error, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST")
    assert f"at most {MAX_JSON_DEPTH} levels" in error.details(), error.details()


@pytest.mark.parametrize("lists", [False, True], ids=["objects", "lists"])
async def test_json_nested_deeper_than_the_limit_is_invalid_argument_invalid_input(
    stubs: Stubs, lists: bool
) -> None:
    too_deep = deep_struct(MAX_JSON_DEPTH + 1, lists=lists)
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    thread_id = thread.thread.thread_id
    calls = {
        "metadata": stubs.threads.CreateThread(
            thread_service_pb2.CreateThreadRequest(metadata=too_deep)
        ),
        "input": stubs.runs.CreateRun(
            run_service_pb2.CreateRunRequest(
                thread_id=thread_id, assistant_id="echo", input=too_deep
            )
        ),
        "config": stubs.assistants.CreateAssistant(
            assistant_service_pb2.CreateAssistantRequest(graph_id="echo", config=too_deep)
        ),
    }
    for field, call in calls.items():
        error = await failure(call)

        assert_specific(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT", field=field)
        assert f"more than {MAX_JSON_DEPTH} levels" in error.details(), error.details()


async def test_a_stream_of_a_run_whose_input_nests_31_deep_is_refused_not_internal(
    stubs: Stubs,
) -> None:
    # Found while fuzzing: accepted, then every `values` event failed to encode into the stream
    # message (INTERNAL mid-stream), and the thread's state could no longer be read by clients.
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    request = run_service_pb2.StreamRunRequest(
        thread_id=thread.thread.thread_id, assistant_id="echo", input=deep_struct(31)
    )

    error = await failure(anext(aiter(stubs.runs.StreamRun(request, timeout=CALL_TIMEOUT))))

    assert_specific(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT", field="input")


@pytest.mark.parametrize("lists", [False, True], ids=["objects", "lists"])
async def test_json_at_the_depth_limit_is_accepted_and_comes_back_in_every_response(
    stubs: Stubs, lists: bool
) -> None:
    deepest = deep_struct(MAX_JSON_DEPTH, lists=lists)
    expected = nested(MAX_JSON_DEPTH, lists=lists)["deep"]
    thread = await stubs.threads.CreateThread(
        thread_service_pb2.CreateThreadRequest(metadata=deepest)
    )
    thread_id = thread.thread.thread_id
    watch = stubs.threads.WatchThread(
        thread_service_pb2.WatchThreadRequest(thread_id=thread_id), timeout=CALL_TIMEOUT
    )
    watched = aiter(watch)
    await anext(watched)  # the watch is open: it sees the run from its start
    modes = [run_pb2.StreamMode.ValueType(m.number) for m in run_pb2.StreamMode.DESCRIPTOR.values]
    stream = stubs.runs.StreamRun(
        run_service_pb2.StreamRunRequest(
            thread_id=thread_id,
            assistant_id="echo",
            input=deepest,
            metadata=deepest,
            stream_mode=modes[1:],
        ),
        timeout=CALL_TIMEOUT,
    )
    streamed = [event async for message in stream for event in message.events]
    run_id = streamed[0].run_id
    assert streamed[-1].event == "end", streamed[-1]
    assert as_json(streamed[-1].data)["status"] == "success", streamed[-1]
    values = [as_json(e.data) for e in streamed if e.event == "values"]
    assert values and values[-1]["deep"] == expected

    joined = [
        event
        async for message in stubs.runs.JoinRunStream(
            run_service_pb2.JoinRunStreamRequest(thread_id=thread_id, run_id=run_id),
            timeout=CALL_TIMEOUT,
        )
        for event in message.events
    ]
    assert [e.seq for e in joined] == [e.seq for e in streamed]
    async for message in watched:
        if any(event.HasField("run_ended") for event in message.events):
            break
    watch.cancel()
    state = await stubs.threads.GetThreadState(
        thread_service_pb2.GetThreadStateRequest(thread_id=thread_id)
    )
    assert as_json(state.checkpoint.values)["deep"] == expected
    got = await stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id=thread_id))
    assert as_json(got.thread.metadata)["deep"] == expected
    await stubs.threads.ListThreads(thread_service_pb2.ListThreadsRequest())
    await stubs.threads.GetThreadHistory(
        thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id)
    )
    joined_run = await stubs.runs.JoinRun(
        run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=run_id)
    )
    assert as_json(joined_run.run.metadata)["deep"] == expected
    waited = await stubs.runs.WaitRun(
        run_service_pb2.WaitRunRequest(thread_id=thread_id, assistant_id="echo", input=deepest)
    )
    assert as_json(waited.values)["deep"] == expected


async def test_an_error_about_a_huge_id_keeps_its_error_info(stubs: Stubs) -> None:
    # Found by the fuzz: the error echoed the id, its trailers passed gRPC's 16 KiB limit and the
    # client got RESOURCE_EXHAUSTED "Stream removed" without the ErrorInfo.
    huge = "é" * 5_000

    missing = await failure(
        stubs.assistants.GetAssistant(assistant_service_pb2.GetAssistantRequest(assistant_id=huge))
    )
    unknown = await failure(
        stubs.assistants.CreateAssistant(
            assistant_service_pb2.CreateAssistantRequest(graph_id=huge)
        )
    )

    assert_specific(missing, grpc.StatusCode.NOT_FOUND, "ASSISTANT_NOT_FOUND")
    assert error_info(missing).metadata["assistant_id"].startswith("éé")
    assert_specific(unknown, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_GRAPH")


async def test_thread_busy_with_a_full_queue_keeps_its_error_info_and_every_inflight_id(
    app: App, stubs: Stubs
) -> None:
    # THREAD_BUSY lists the inflight runs in its message and its metadata; with the 101 runs a
    # thread may hold by default, the trailers passed gRPC's 8 KiB soft limit and some clients
    # (about 2 in 5) got RESOURCE_EXHAUSTED without the ErrorInfo.
    thread = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    thread_id = thread.thread.thread_id
    held = await stubs.runs.CreateRun(
        run_service_pb2.CreateRunRequest(
            thread_id=thread_id, assistant_id="gated", input=struct({"gates": ["hold"]})
        )
    )
    inflight = [held.run.run_id]
    for _ in range(app.config.max_queued):
        queued = await stubs.runs.CreateRun(
            run_service_pb2.CreateRunRequest(thread_id=thread_id, assistant_id="echo")
        )
        inflight.append(queued.run.run_id)
    reject = run_service_pb2.CreateRunRequest(
        thread_id=thread_id,
        assistant_id="echo",
        multitask_strategy=run_pb2.MULTITASK_STRATEGY_REJECT,
    )

    for _ in range(20):
        error = await failure(stubs.runs.CreateRun(reject))

        assert_specific(error, grpc.StatusCode.ABORTED, "THREAD_BUSY", thread_id=thread_id)
        assert error_info(error).metadata["inflight_run_ids"].split(",") == inflight
    support.GATES.open("hold")


async def test_a_request_over_the_size_limit_is_resource_exhausted_and_the_server_serves_on(
    app: App,
) -> None:
    limit = app.config.max_message_bytes
    assert limit == 1024 * 1024  # the default
    under = thread_service_pb2.CreateThreadRequest(metadata=struct({"text": "x" * (limit - 64)}))
    over = thread_service_pb2.CreateThreadRequest(metadata=struct({"text": "x" * limit}))
    assert under.ByteSize() <= limit < over.ByteSize()
    async with grpc.aio.insecure_channel(app.address) as channel:
        stubs = Stubs(channel)

        created = await stubs.threads.CreateThread(under)
        error = await failure(stubs.threads.CreateThread(over))

        assert len(created.thread.metadata["text"]) == limit - 64
        # gRPC's own answer, before any of our code runs: no ErrorInfo.
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "larger than max" in (error.details() or ""), error
        await still_serving(channel)


async def test_the_size_limit_is_configurable(database: str) -> None:
    app = await App.start(
        ServerConfig(host="127.0.0.1", port=0, database=database, max_message_bytes=64 * 1024),
        support.registry(),
    )
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            request = thread_service_pb2.CreateThreadRequest(
                metadata=struct({"text": "x" * 65 * 1024})
            )

            error = await failure(Stubs(channel).threads.CreateThread(request))

            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            await still_serving(channel)
    finally:
        await app.stop(grace=0)
