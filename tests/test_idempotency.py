"""Request ids: a retried create returns the first result and never makes a second thread or run;
the SDK retries `UNAVAILABLE` only where that holds, with request ids it generates.

The SDK tests go through a proxy that lets chosen calls reach the server and then answers
`UNAVAILABLE` in place of the response: the hard case, where only a request id can tell the
retry from a new request.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from tests import support
from tests.rpc import DOMAIN, Stubs, error_info, human_input, struct
from turnstile import TurnstileClient, UnavailableError, get_client
from turnstile.v1 import (
    assistant_service_pb2,
    run_pb2,
    run_service_pb2,
    thread_service_pb2,
)
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

GATE_TIMEOUT = 10.0
HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def stubs(app: App) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(app.address) as channel:
        yield Stubs(channel)


async def new_thread(stubs: Stubs) -> str:
    response = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    thread_id: str = response.thread.thread_id
    return thread_id


async def runs_of(stubs: Stubs, thread_id: str) -> list[str]:
    response = await stubs.runs.ListRuns(run_service_pb2.ListRunsRequest(thread_id=thread_id))
    return [run.run_id for run in response.runs]


async def reused(call: Awaitable[Any], field: str) -> None:
    """Expects FAILED_PRECONDITION, reason REQUEST_ID_REUSED, naming the differing field."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info = error_info(caught.value)
    assert (info.code, info.reason, info.domain) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REQUEST_ID_REUSED",
        DOMAIN,
    ), info
    assert info.metadata["field"] == field, info


def create_run(thread_id: str, request_id: str, **fields: Any) -> run_service_pb2.CreateRunRequest:
    fields.setdefault("assistant_id", "echo")
    fields.setdefault("input", human_input("hi"))
    return run_service_pb2.CreateRunRequest(thread_id=thread_id, request_id=request_id, **fields)


# --- the server ------------------------------------------------------------------------------


async def test_create_thread_twice_with_one_request_id_returns_the_same_thread(
    stubs: Stubs,
) -> None:
    request = thread_service_pb2.CreateThreadRequest(
        request_id="thread-request-1", metadata=struct({"user": "ada"})
    )

    first = await stubs.threads.CreateThread(request)
    second = await stubs.threads.CreateThread(request)

    assert second.thread.thread_id == first.thread.thread_id
    listed = await stubs.threads.ListThreads(thread_service_pb2.ListThreadsRequest())
    assert [t.thread_id for t in listed.threads] == [first.thread.thread_id]


async def test_create_wait_and_stream_with_one_request_id_are_one_run(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    fields: dict[str, Any] = {
        "thread_id": thread_id,
        "assistant_id": "echo",
        "input": human_input("hi"),
        "request_id": "run-request-1",
    }

    created = await stubs.runs.CreateRun(run_service_pb2.CreateRunRequest(**fields))
    waited = await stubs.runs.WaitRun(run_service_pb2.WaitRunRequest(**fields))
    stream = stubs.runs.StreamRun(run_service_pb2.StreamRunRequest(**fields))
    streamed = [message async for message in stream]

    assert waited.run.run_id == created.run.run_id
    assert waited.run.status == run_pb2.RUN_STATUS_SUCCESS
    assert streamed[0].run.run_id == created.run.run_id
    assert streamed[-1].events[-1].event == "end"
    assert await runs_of(stubs, thread_id) == [created.run.run_id]


async def test_twenty_concurrent_creates_with_one_request_id_admit_one_run(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    request = create_run(thread_id, "run-request-burst")

    responses = await asyncio.gather(*(stubs.runs.CreateRun(request) for _ in range(20)))

    assert len({r.run.run_id for r in responses}) == 1, responses
    assert await runs_of(stubs, thread_id) == [responses[0].run.run_id]


async def test_a_retry_after_the_run_ended_returns_the_ended_run(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    request = run_service_pb2.WaitRunRequest(
        thread_id=thread_id, assistant_id="echo", input=human_input("hi"), request_id="r-ended"
    )
    first = await stubs.runs.WaitRun(request)

    again = await stubs.runs.WaitRun(request)
    created = await stubs.runs.CreateRun(create_run(thread_id, "r-ended"))

    assert again.run == first.run and again.values == first.values
    assert created.run == first.run
    assert await runs_of(stubs, thread_id) == [first.run.run_id]


async def rolled_back(call: Awaitable[Any], run_id: str) -> None:
    """Expects FAILED_PRECONDITION, reason REQUEST_ID_ROLLED_BACK, naming the run."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info = error_info(caught.value)
    assert (info.code, info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REQUEST_ID_ROLLED_BACK",
    ), info
    assert info.metadata["run_id"] == run_id, info


async def test_a_retry_after_the_run_was_rolled_back_admits_nothing_also_after_a_restart(
    database: str,
) -> None:
    # A run rolled back is deleted with its request id: the retry of a CreateRun whose
    # answer was lost admitted a second run and applied the input twice.
    config = ServerConfig(host="127.0.0.1", port=0, database=database)
    app = await App.start(config, support.registry())
    try:
        async with grpc.aio.insecure_channel(app.address) as channel:
            stubs = Stubs(channel)
            thread_id = await new_thread(stubs)
            gated = {"gates": ["rolled"], "messages": [{"role": "user", "content": "once"}]}
            request = create_run(thread_id, "r-rolled", assistant_id="gated", input=struct(gated))
            run = (await stubs.runs.CreateRun(request)).run
            async with asyncio.timeout(GATE_TIMEOUT):
                await support.GATES.arrived("rolled").wait()
            await stubs.runs.CancelRun(
                run_service_pb2.CancelRunRequest(
                    thread_id=thread_id,
                    run_id=run.run_id,
                    action=run_pb2.CANCEL_ACTION_ROLLBACK,
                    wait=True,
                )
            )
            queued = create_run(thread_id, "r-queued", assistant_id="gated", input=struct(gated))
            pending = (await stubs.runs.CreateRun(queued)).run  # starts at once: the thread is idle
            superseding = create_run(
                thread_id, "r-new", multitask_strategy=run_pb2.MULTITASK_STRATEGY_ROLLBACK
            )
            new = (await stubs.runs.CreateRun(superseding)).run  # rolls the second one back too
            # Retried once that rollback is over (the new run starts only after it): while the
            # rolled-back run unwinds it still exists, and a retry gets its record.
            await stubs.runs.JoinRun(
                run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=new.run_id)
            )

            await rolled_back(stubs.runs.CreateRun(request), run.run_id)
            await rolled_back(stubs.runs.CreateRun(queued), pending.run_id)
            await rolled_back(
                stubs.runs.WaitRun(
                    run_service_pb2.WaitRunRequest(
                        thread_id=thread_id,
                        assistant_id="gated",
                        input=struct(gated),
                        request_id="r-rolled",
                    )
                ),
                run.run_id,
            )
    finally:
        await app.stop(grace=0)

    again = await App.start(config, support.registry())
    try:
        async with grpc.aio.insecure_channel(again.address) as channel:
            stubs = Stubs(channel)
            await rolled_back(stubs.runs.CreateRun(request), run.run_id)
            state = await stubs.threads.GetThreadState(
                thread_service_pb2.GetThreadStateRequest(thread_id=thread_id)
            )
            contents = [
                m.struct_value.fields["content"].string_value
                for m in state.checkpoint.values.fields["messages"].list_value.values
            ]
            assert "once" not in contents, "the rolled-back inputs stay undone"
    finally:
        await again.stop(grace=0)


async def test_a_reject_retry_returns_the_admitted_run_rather_than_thread_busy(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    reject = run_pb2.MULTITASK_STRATEGY_REJECT
    request = create_run(
        thread_id,
        "r-reject",
        assistant_id="gated",
        input=struct({"gates": ["reject-retry"]}),
        multitask_strategy=reject,
    )
    admitted = await stubs.runs.CreateRun(request)
    await asyncio.wait_for(support.GATES.arrived("reject-retry").wait(), GATE_TIMEOUT)

    retried = await stubs.runs.CreateRun(request)
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await stubs.runs.CreateRun(create_run(thread_id, "r-other", multitask_strategy=reject))

    assert retried.run.run_id == admitted.run.run_id
    assert retried.run.status == run_pb2.RUN_STATUS_RUNNING
    assert error_info(busy.value).reason == "THREAD_BUSY"
    assert await runs_of(stubs, thread_id) == [admitted.run.run_id]
    support.GATES.open("reject-retry")


async def test_a_request_id_reused_for_another_thread_is_failed_precondition(
    stubs: Stubs,
) -> None:
    first_thread, other_thread = await new_thread(stubs), await new_thread(stubs)
    await stubs.runs.CreateRun(create_run(first_thread, "r-shared"))

    await reused(stubs.runs.CreateRun(create_run(other_thread, "r-shared")), "thread_id")
    await reused(
        stubs.runs.WaitRun(
            run_service_pb2.WaitRunRequest(
                thread_id=other_thread, assistant_id="echo", request_id="r-shared"
            )
        ),
        "thread_id",
    )

    assert await runs_of(stubs, other_thread) == []


@pytest.mark.parametrize(
    ("field", "changed"),
    [
        ("assistant_id", {"assistant_id": "failing"}),
        ("input", {"input": human_input("something else")}),
        ("metadata", {"metadata": struct({"user": "bob"})}),
        ("config", {"config": struct({"configurable": {"x": 1}})}),
        ("multitask_strategy", {"multitask_strategy": run_pb2.MULTITASK_STRATEGY_INTERRUPT}),
        ("stream_mode", {"stream_mode": [run_pb2.STREAM_MODE_UPDATES]}),
        ("timeout_seconds", {"timeout_seconds": 5.0}),
    ],
)
async def test_a_request_id_reused_with_other_parameters_is_failed_precondition(
    stubs: Stubs, field: str, changed: dict[str, Any]
) -> None:
    thread_id = await new_thread(stubs)
    first = await stubs.runs.CreateRun(create_run(thread_id, "r-params"))

    await reused(stubs.runs.CreateRun(create_run(thread_id, "r-params", **changed)), field)

    assert await runs_of(stubs, thread_id) == [first.run.run_id]


async def test_a_retry_is_the_same_request_although_the_server_named_its_messages(
    stubs: Stubs,
) -> None:
    # The input's messages carry no id: the server makes ids up, differently each time.
    thread_id = await new_thread(stubs)
    first = await stubs.runs.CreateRun(create_run(thread_id, "r-ids"))

    again = await stubs.runs.CreateRun(create_run(thread_id, "r-ids"))

    assert again.run.run_id == first.run.run_id


async def test_a_thread_request_id_reused_for_another_thread_id_is_failed_precondition(
    stubs: Stubs,
) -> None:
    first = await stubs.threads.CreateThread(
        thread_service_pb2.CreateThreadRequest(request_id="t-shared")
    )
    other_id = "0b5f8f1e-4a50-4a51-8d0e-6c0f4b7f2a11"

    again = await stubs.threads.CreateThread(
        thread_service_pb2.CreateThreadRequest(request_id="t-shared")
    )
    same_id = await stubs.threads.CreateThread(
        thread_service_pb2.CreateThreadRequest(
            request_id="t-shared", thread_id=first.thread.thread_id
        )
    )
    await reused(
        stubs.threads.CreateThread(
            thread_service_pb2.CreateThreadRequest(request_id="t-shared", thread_id=other_id)
        ),
        "thread_id",
    )

    assert again.thread.thread_id == same_id.thread.thread_id == first.thread.thread_id
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id=other_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# --- the SDK, through a proxy that loses responses -------------------------------------------


class LosingProxy:
    """Forwards every Turnstile call to the server as bytes; for the methods in `losses`, the
    first that many calls reach the server and get its answer (a stream: its first message),
    and the proxy answers `UNAVAILABLE` instead."""

    def __init__(self, upstream: grpc.aio.Channel, losses: dict[str, int]) -> None:
        self._upstream = upstream
        self._losses = dict(losses)
        self.requests: dict[str, list[bytes]] = defaultdict(list)

    def handlers(self) -> list[Any]:
        services: dict[str, dict[str, Any]] = defaultdict(dict)
        for module in (assistant_service_pb2, thread_service_pb2, run_service_pb2):
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    path = f"/{service.full_name}/{method.name}"
                    services[service.full_name][method.name] = (
                        grpc.unary_stream_rpc_method_handler(self._stream(method.name, path))
                        if method.server_streaming
                        else grpc.unary_unary_rpc_method_handler(self._unary(method.name, path))
                    )
        return [grpc.method_handlers_generic_handler(s, m) for s, m in services.items()]

    def _lose(self, name: str) -> bool:
        if self._losses.get(name, 0) <= 0:
            return False
        self._losses[name] -= 1
        return True

    def _unary(self, name: str, path: str) -> Any:
        async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            self.requests[name].append(request)
            try:
                response: bytes = await self._upstream.unary_unary(path)(request, timeout=30)
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details(), tuple(error.trailing_metadata()))
            if self._lose(name):
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the response was lost")
            return response

        return forward

    def _stream(self, name: str, path: str) -> Any:
        async def forward(
            request: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            self.requests[name].append(request)
            call = self._upstream.unary_stream(path)(request, timeout=30)
            try:
                async for message in call:
                    if self._lose(name):
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "the response was lost")
                    yield message
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details(), tuple(error.trailing_metadata()))
            finally:
                call.cancel()

        return forward


@asynccontextmanager
async def losing(app: App, **losses: int) -> AsyncIterator[tuple[LosingProxy, TurnstileClient]]:
    """A proxy to `app` losing the first `losses[method]` responses, and an SDK client on it."""
    async with grpc.aio.insecure_channel(app.address) as upstream:
        proxy = LosingProxy(upstream, losses)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(proxy.handlers())
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = get_client(url=f"127.0.0.1:{port}")
        try:
            yield proxy, client
        finally:
            await client.close()
            await server.stop(0)


def request_ids(proxy: LosingProxy, method: str, request_type: type[Any]) -> list[str]:
    return [request_type.FromString(raw).request_id for raw in proxy.requests[method]]


async def test_sdk_runs_create_retries_a_lost_response_and_gets_the_one_run(
    app: App, stubs: Stubs
) -> None:
    thread_id = await new_thread(stubs)
    async with losing(app, CreateRun=2) as (proxy, client):
        run = await client.runs.create(thread_id, "echo", input=HI)

    sent = request_ids(proxy, "CreateRun", run_service_pb2.CreateRunRequest)
    assert len(sent) == 3 and sent[0] and len(set(sent)) == 1, sent
    assert await runs_of(stubs, thread_id) == [run["run_id"]]


async def test_sdk_runs_wait_retries_a_lost_response_and_gets_the_one_run(
    app: App, stubs: Stubs
) -> None:
    thread_id = await new_thread(stubs)
    async with losing(app, WaitRun=2) as (proxy, client):
        result = await client.runs.wait_run(thread_id, "echo", input=HI)

    sent = request_ids(proxy, "WaitRun", run_service_pb2.WaitRunRequest)
    assert len(sent) == 3 and sent[0] and len(set(sent)) == 1, sent
    assert result.run["status"] == "success"
    assert await runs_of(stubs, thread_id) == [result.run["run_id"]]


async def test_sdk_threads_create_retries_a_lost_response_and_gets_the_one_thread(
    app: App, stubs: Stubs
) -> None:
    async with losing(app, CreateThread=2) as (proxy, client):
        thread = await client.threads.create(metadata={"user": "ada"})

    sent = request_ids(proxy, "CreateThread", thread_service_pb2.CreateThreadRequest)
    assert len(sent) == 3 and sent[0] and len(set(sent)) == 1, sent
    listed = await stubs.threads.ListThreads(thread_service_pb2.ListThreadsRequest())
    assert [t.thread_id for t in listed.threads] == [thread["thread_id"]]


async def test_sdk_runs_stream_resends_a_lost_admission_and_streams_the_one_run(
    app: App, stubs: Stubs
) -> None:
    thread_id = await new_thread(stubs)
    async with losing(app, StreamRun=1) as (proxy, client):
        parts = [p async for p in client.runs.stream(thread_id, "echo", input=HI)]

    sent = request_ids(proxy, "StreamRun", run_service_pb2.StreamRunRequest)
    assert len(sent) == 2 and sent[0] and len(set(sent)) == 1, sent
    assert [p.seq for p in parts] == list(range(1, len(parts) + 1))
    assert parts[-1].event == "end" and parts[-1].data["status"] == "success"
    assert len(await runs_of(stubs, thread_id)) == 1


async def test_sdk_reads_retry_a_lost_response(app: App, stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    run = await stubs.runs.CreateRun(create_run(thread_id, "r-read"))
    async with losing(app, GetRun=1, ListRuns=1, JoinRun=1, GetThreadState=1) as (proxy, client):
        got = await client.runs.get(thread_id, run.run.run_id)
        listed = await client.runs.list(thread_id)
        joined = await client.runs.join_run(thread_id, run.run.run_id)
        state = await client.threads.get_state(thread_id)

    assert got["run_id"] == listed[0]["run_id"] == joined.run["run_id"] == run.run.run_id
    assert state["values"]["messages"][-1]["type"] == "ai"
    assert {name: len(calls) for name, calls in proxy.requests.items()} == {
        "GetRun": 2,
        "ListRuns": 2,
        "JoinRun": 2,
        "GetThreadState": 2,
    }


async def test_sdk_does_not_retry_updates_cancels_or_deletes(app: App, stubs: Stubs) -> None:
    # Each of these worked on the server: a retry of cancel or delete would answer
    # RUN_NOT_ACTIVE or NOT_FOUND for it, one of update could overwrite a newer value; so the
    # caller gets UNAVAILABLE and decides.
    thread_id = await new_thread(stubs)
    held = await stubs.runs.CreateRun(
        create_run(thread_id, "", assistant_id="gated", input=struct({"gates": ["never"]}))
    )
    lost = {"UpdateThread": 1, "CancelRun": 1, "DeleteRun": 1, "DeleteThread": 1}
    async with losing(app, **lost) as (proxy, client):
        with pytest.raises(UnavailableError):
            await client.threads.update(thread_id, metadata={"user": "ada"})
        with pytest.raises(UnavailableError):
            await client.runs.cancel(thread_id, held.run.run_id, wait=True)
        with pytest.raises(UnavailableError):
            await client.runs.delete(thread_id, held.run.run_id)
        with pytest.raises(UnavailableError):
            await client.threads.delete(thread_id)

    assert {name: len(calls) for name, calls in proxy.requests.items()} == lost
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id=thread_id))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
