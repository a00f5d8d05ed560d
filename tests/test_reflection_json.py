"""A client with no .proto files and no generated code: reflection, plain JSON, like grpcurl.

Everything this client knows about the contract it learns from the server's reflection service;
it deliberately imports nothing from `turnstile.v1` and builds its own descriptor pool.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.protobuf import (
    descriptor,
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from turnstile_server.app import App

TIMEOUT = 10.0
TURNSTILE_SERVICES = {
    "turnstile.v1.AssistantService",
    "turnstile.v1.ThreadService",
    "turnstile.v1.RunService",
}
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"

Json = dict[str, Any]


class JsonClient:
    """Calls methods by name with JSON bodies, using descriptors fetched through reflection."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.pool = descriptor_pool.DescriptorPool()
        self._loaded: set[str] = set()

    async def _reflect(self, request: Any) -> Any:
        responses = [
            response
            async for response in self._reflection.ServerReflectionInfo(
                iter([request]), timeout=TIMEOUT
            )
        ]
        assert len(responses) == 1, responses
        response = responses[0]
        assert not response.HasField("error_response"), response.error_response
        return response

    async def list_services(self) -> list[str]:
        """The names of the services the server lists through reflection."""
        response = await self._reflect(reflection_pb2.ServerReflectionRequest(list_services=""))
        return [service.name for service in response.list_services_response.service]

    async def load(self, symbol: str) -> None:
        """Adds the file defining `symbol` and everything it imports to the pool."""
        response = await self._reflect(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        )
        files = _parse_files(response)
        missing = _missing_dependencies(files, self._loaded)
        while missing:
            for name in missing:
                response = await self._reflect(
                    reflection_pb2.ServerReflectionRequest(file_by_filename=name)
                )
                files.update(_parse_files(response))
            missing = _missing_dependencies(files, self._loaded)
        for proto in _in_dependency_order(files, self._loaded):
            self.pool.Add(proto)
            self._loaded.add(proto.name)

    def _method(self, full_name: str) -> descriptor.MethodDescriptor:
        service_name, _, method_name = full_name.rpartition(".")
        method: descriptor.MethodDescriptor = self.pool.FindServiceByName(
            service_name
        ).FindMethodByName(method_name)
        return method

    async def call(self, full_name: str, body: Json) -> Json:
        """Calls a unary method, e.g. `turnstile.v1.ThreadService.CreateThread`, with JSON."""
        method = self._method(full_name)
        assert not method.server_streaming and not method.client_streaming
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        multicallable = self._channel.unary_unary(
            _path(method),
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        request = json_format.Parse(json.dumps(body), request_class())
        response = await multicallable(request, timeout=TIMEOUT)
        return _to_json(response)

    async def stream(self, full_name: str, body: Json) -> AsyncIterator[Json]:
        """Calls a server-streaming method with JSON; yields every response as JSON."""
        method = self._method(full_name)
        assert method.server_streaming and not method.client_streaming
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        multicallable = self._channel.unary_stream(
            _path(method),
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        request = json_format.Parse(json.dumps(body), request_class())
        async for response in multicallable(request, timeout=TIMEOUT):
            yield _to_json(response)


def _path(method: descriptor.MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _to_json(message: Any) -> Json:
    """Renders a response as a JSON client prints it, then reads that text back."""
    text = json_format.MessageToJson(message)
    result: Json = json.loads(text)
    return result


def _parse_files(response: Any) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for serialized in response.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        files[proto.name] = proto
    return files


def _missing_dependencies(
    files: dict[str, descriptor_pb2.FileDescriptorProto], loaded: set[str]
) -> list[str]:
    return sorted(
        {
            dependency
            for proto in files.values()
            for dependency in proto.dependency
            if dependency not in files and dependency not in loaded
        }
    )


def _in_dependency_order(
    files: dict[str, descriptor_pb2.FileDescriptorProto], loaded: set[str]
) -> list[descriptor_pb2.FileDescriptorProto]:
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    placed = set(loaded)

    def place(name: str) -> None:
        if name in placed:
            return
        placed.add(name)
        for dependency in files[name].dependency:
            place(dependency)
        ordered.append(files[name])

    for name in sorted(files):
        place(name)
    return ordered


@pytest.fixture
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(app.address) as open_channel:
        yield open_channel


@pytest.fixture
async def client(channel: grpc.aio.Channel) -> JsonClient:
    json_client = JsonClient(channel)
    for service in sorted(TURNSTILE_SERVICES):
        await json_client.load(service)
    return json_client


async def test_reflection_lists_the_turnstile_health_and_reflection_services(
    channel: grpc.aio.Channel,
) -> None:
    services = await JsonClient(channel).list_services()

    assert {*TURNSTILE_SERVICES, HEALTH_SERVICE, REFLECTION_SERVICE} <= set(services)


async def test_reflection_describes_every_method_with_its_messages(client: JsonClient) -> None:
    run_service = client.pool.FindServiceByName("turnstile.v1.RunService")

    assert {m.name for m in run_service.methods} >= {
        "CreateRun",
        "StreamRun",
        "WaitRun",
        "GetRun",
        "ListRuns",
        "DeleteRun",
        "CancelRun",
        "JoinRun",
        "JoinRunStream",
    }
    assert run_service.FindMethodByName("StreamRun").server_streaming
    wait = run_service.FindMethodByName("WaitRun")
    assert wait.input_type.full_name == "turnstile.v1.WaitRunRequest"
    run_type = wait.output_type.fields_by_name["run"].message_type
    assert run_type is not None
    assert run_type.full_name == "turnstile.v1.Run"


async def test_create_thread_and_wait_run_with_plain_json(client: JsonClient) -> None:
    created = await client.call("turnstile.v1.ThreadService.CreateThread", {})
    thread_id = created["thread"]["threadId"]
    assert created["thread"]["status"] == "THREAD_STATUS_IDLE"

    waited = await client.call(
        "turnstile.v1.RunService.WaitRun",
        {
            "threadId": thread_id,
            "assistantId": "echo",
            "input": {"messages": [{"role": "user", "content": "hi"}]},
        },
    )

    assert waited["run"]["status"] == "RUN_STATUS_SUCCESS"
    assert waited["run"]["threadId"] == thread_id
    messages = waited["values"]["messages"]
    assert [(m["type"], m["content"]) for m in messages] == [("human", "hi"), ("ai", "hi")]
    thread = await client.call("turnstile.v1.ThreadService.GetThread", {"threadId": thread_id})
    assert thread["thread"]["values"] == waited["values"]


async def test_stream_run_with_plain_json_yields_contiguous_events_from_metadata_to_end(
    client: JsonClient,
) -> None:
    created = await client.call("turnstile.v1.ThreadService.CreateThread", {})
    thread_id = created["thread"]["threadId"]

    responses = [
        response
        async for response in client.stream(
            "turnstile.v1.RunService.StreamRun",
            {
                "threadId": thread_id,
                "assistantId": "echo",
                "input": {"messages": [{"role": "user", "content": "hi"}]},
                "streamMode": ["STREAM_MODE_VALUES", "STREAM_MODE_UPDATES"],
            },
        )
    ]

    run_id = responses[0]["run"]["runId"]
    events = [event for response in responses for event in response.get("events", [])]
    # int64 travels as a JSON string, as proto3 JSON mapping says.
    assert [int(event["seq"]) for event in events] == list(range(1, len(events) + 1))
    assert {event["runId"] for event in events} == {run_id}
    assert events[0]["event"] == "metadata"
    assert events[0]["data"]["run_id"] == run_id
    assert events[-1]["event"] == "end"
    assert events[-1]["data"]["status"] == "success"
    kinds = {event["event"] for event in events}
    assert {"values", "updates"} <= kinds
    assert "messages" not in kinds
    final_values = [e["data"] for e in events if e["event"] == "values"][-1]
    assert final_values["messages"][-1]["type"] == "ai"
    assert final_values["messages"][-1]["content"] == "hi"


async def test_bad_json_request_is_invalid_argument_with_a_message(client: JsonClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.call(
            "turnstile.v1.RunService.GetRun",
            {"threadId": "nope", "runId": "00000000-0000-0000-0000-000000000000"},
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert details.strip()
    assert "thread_id" in details
    assert "Traceback" not in details


async def test_health_check_answers_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)

    for service in ["", *sorted(TURNSTILE_SERVICES)]:
        response = await health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
        )
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service


async def test_the_langgraph_run_options_and_thread_state_fields_in_plain_json(
    client: JsonClient,
) -> None:
    created = await client.call("turnstile.v1.ThreadService.CreateThread", {})
    thread_id = created["thread"]["threadId"]

    waited = await client.call(
        "turnstile.v1.RunService.WaitRun",
        {
            "threadId": thread_id,
            "assistantId": "echo",
            "input": {"messages": [{"role": "user", "content": "hi"}]},
            "context": {"user": "ada"},
            "streamSubgraphs": True,
            "closeToolCalls": False,
            "onPendingInterrupt": "ON_PENDING_INTERRUPT_REJECT",
            "streamMode": ["STREAM_MODE_MESSAGES_PARTIAL", "STREAM_MODE_DEBUG"],
        },
    )
    state = await client.call("turnstile.v1.ThreadService.GetThreadState", {"threadId": thread_id})
    earlier = await client.call(
        "turnstile.v1.ThreadService.GetThreadState",
        {
            "threadId": thread_id,
            "checkpointId": state["checkpoint"]["parentCheckpoint"]["checkpointId"],
        },
    )
    listed = await client.call(
        "turnstile.v1.ThreadService.ListThreads", {"interruption": "INTERRUPTION_AWAITING_INPUT"}
    )

    run = waited["run"]
    assert run["context"] == {"user": "ada"}
    assert (run["streamSubgraphs"], run["closeToolCalls"]) == (True, False)
    assert run["onPendingInterrupt"] == "ON_PENDING_INTERRUPT_REJECT"
    checkpoint = state["checkpoint"]
    assert checkpoint["metadata"]["run_id"] == run["runId"]
    assert checkpoint["parentCheckpoint"]["threadId"] == thread_id
    assert "next" not in checkpoint and "tasks" not in checkpoint  # empty for a native graph
    assert earlier["checkpoint"]["checkpointId"] == checkpoint["parentCheckpoint"]["checkpointId"]
    assert thread_id not in {t["threadId"] for t in listed.get("threads", [])}


@pytest.mark.parametrize(
    "command",
    [
        pytest.param({"resume": {"approved": True}}, id="resume"),
        pytest.param({"resumeById": {"0123456789abcdef0123456789abcdef": "yes"}}, id="by-id"),
        pytest.param({"update": {"x": 1}, "goto": ["tools"]}, id="update-goto"),
    ],
)
async def test_a_json_command_parses_and_a_native_graph_refuses_it(
    client: JsonClient, command: Json
) -> None:
    created = await client.call("turnstile.v1.ThreadService.CreateThread", {})
    thread_id = created["thread"]["threadId"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.call(
            "turnstile.v1.RunService.CreateRun",
            {"threadId": thread_id, "assistantId": "echo", "command": command},
        )
    with pytest.raises(grpc.aio.AioRpcError) as updating:
        await client.call(
            "turnstile.v1.ThreadService.UpdateThreadState",
            {"threadId": thread_id, "values": {"x": 1}, "asNode": "echo"},
        )

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "LangGraph" in (caught.value.details() or "")
    assert updating.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@asynccontextmanager
async def hitl_database(backend: str, tmp_path: Any) -> AsyncIterator[str]:
    """A SQLite file, or a fresh PostgreSQL database's URL (`tests/postgres.py`)."""
    if backend == "sqlite":
        yield str(tmp_path / "hitl.db")
        return
    from tests import postgres

    async with postgres.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def hitl_client(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[JsonClient]:
    async with hitl_database(request.param, tmp_path) as database:
        async for json_client in _hitl_client(database):
            yield json_client


async def _hitl_client(database: str) -> AsyncIterator[JsonClient]:
    from tests.hitl_graphs import hitl_registry
    from turnstile_server.config import ServerConfig

    server = await App.start(
        ServerConfig(host="127.0.0.1", port=0, database=database), hitl_registry()
    )
    try:
        async with grpc.aio.insecure_channel(server.address) as open_channel:
            json_client = JsonClient(open_channel)
            for service in sorted(TURNSTILE_SERVICES):
                await json_client.load(service)
            yield json_client
    finally:
        await server.stop(grace=0)


async def test_human_in_the_loop_with_plain_json(hitl_client: JsonClient) -> None:
    client = hitl_client
    created = await client.call("turnstile.v1.ThreadService.CreateThread", {})
    thread_id = created["thread"]["threadId"]

    first = [
        event
        async for response in client.stream(
            "turnstile.v1.RunService.StreamRun",
            {"threadId": thread_id, "assistantId": "parallel", "input": {}},
        )
        for event in response.get("events", [])
    ]
    waiting = await client.call("turnstile.v1.ThreadService.GetThread", {"threadId": thread_id})
    listed = await client.call(
        "turnstile.v1.ThreadService.ListThreads", {"interruption": "INTERRUPTION_AWAITING_INPUT"}
    )
    by_value = {i["value"]: i["id"] for i in waiting["thread"]["interrupts"]}
    refused = None
    try:
        await client.call(
            "turnstile.v1.RunService.CreateRun",
            {
                "threadId": thread_id,
                "assistantId": "parallel",
                "command": {"resumeById": {"f" * 32: "?"}},
            },
        )
    except grpc.aio.AioRpcError as error:
        refused = error.code()
    events = [
        event
        async for response in client.stream(
            "turnstile.v1.RunService.StreamRun",
            {
                "threadId": thread_id,
                "assistantId": "parallel",
                "command": {"resumeById": {by_value["left?"]: "L", by_value["right?"]: "R"}},
                "streamMode": ["STREAM_MODE_UPDATES"],
            },
        )
        for event in response.get("events", [])
    ]
    done = await client.call("turnstile.v1.ThreadService.GetThread", {"threadId": thread_id})

    end = first[-1]["data"]
    assert (first[-1]["event"], end["status"], end["awaiting_input"]) == ("end", "success", True)
    assert sorted(i["value"] for i in end["interrupts"]) == ["left?", "right?"]
    thread = waiting["thread"]
    assert (thread["status"], thread["interruption"]) == (
        "THREAD_STATUS_INTERRUPTED",
        "INTERRUPTION_AWAITING_INPUT",
    )
    assert set(by_value) == {"left?", "right?"}
    assert all(i["taskId"] for i in thread["interrupts"])
    assert thread_id in {t["threadId"] for t in listed["threads"]}
    assert refused == grpc.StatusCode.FAILED_PRECONDITION
    assert events[-1]["event"] == "end" and events[-1]["data"]["status"] == "success"
    assert "awaiting_input" not in events[-1]["data"]
    assert done["thread"]["status"] == "THREAD_STATUS_IDLE"
    assert "interrupts" not in done["thread"] and "interruption" not in done["thread"]
