"""SPEC §9, row by row: each domain error's gRPC code and its `ErrorInfo` (reason, domain)."""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import support
from tests.lg_graphs import GRAPHS, lg_registry
from tests.rpc import DOMAIN, ErrorDetails, Stubs, error_info, human_input, random_id, struct
from turnstile.v1 import (
    assistant_pb2,
    assistant_service_pb2,
    run_pb2,
    run_service_pb2,
    thread_pb2,
    thread_service_pb2,
)
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

GATE_TIMEOUT = 10.0
# Enum numbers the contract does not define; proto3 enums are open, so they reach the server.
BAD_CANCEL_ACTION = run_pb2.CancelAction.ValueType(99)
BAD_IF_EXISTS = assistant_pb2.IfExists.ValueType(99)
BAD_THREAD_STATUS = thread_pb2.ThreadStatus.ValueType(99)
BAD_RUN_STATUS = run_pb2.RunStatus.ValueType(99)

Call = Callable[[], Awaitable[Any]]


@pytest.fixture
async def stubs(app: App) -> AsyncIterator[Stubs]:
    async with grpc.aio.insecure_channel(app.address) as channel:
        yield Stubs(channel)


async def failure(call: Call) -> ErrorDetails:
    """Makes the call, expects it to fail, and returns what the failure said."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    return error_info(caught.value)


def assert_error(error: ErrorDetails, code: grpc.StatusCode, reason: str, **metadata: str) -> None:
    """Checks code, reason, domain and the given metadata entries of a failure."""
    assert (error.code, error.reason, error.domain) == (code, reason, DOMAIN), error
    assert error.message.strip(), error
    assert "Traceback" not in error.message, error
    for key, value in metadata.items():
        assert error.metadata.get(key) == value, (key, error.metadata)


async def new_thread(stubs: Stubs) -> str:
    response: thread_service_pb2.CreateThreadResponse = await stubs.threads.CreateThread(
        thread_service_pb2.CreateThreadRequest()
    )
    return response.thread.thread_id


async def finished_run(stubs: Stubs, thread_id: str) -> run_pb2.Run:
    response: run_service_pb2.WaitRunResponse = await stubs.runs.WaitRun(
        run_service_pb2.WaitRunRequest(
            thread_id=thread_id, assistant_id="echo", input=human_input("hi")
        )
    )
    assert response.run.status == run_pb2.RUN_STATUS_SUCCESS
    return response.run


async def running_gated_run(stubs: Stubs, thread_id: str, gate: str) -> run_pb2.Run:
    """Starts a `gated` run and returns once it is RUNNING, held at `gate`."""
    response: run_service_pb2.CreateRunResponse = await stubs.runs.CreateRun(
        run_service_pb2.CreateRunRequest(
            thread_id=thread_id, assistant_id="gated", input=struct({"gates": [gate]})
        )
    )
    async with asyncio.timeout(GATE_TIMEOUT):
        await support.GATES.arrived(gate).wait()
    return response.run


async def release(stubs: Stubs, run: run_pb2.Run, gate: str) -> None:
    """Opens the gate and waits for the run to end, so no run outlives the test."""
    support.GATES.open(gate)
    joined = await stubs.runs.JoinRun(
        run_service_pb2.JoinRunRequest(thread_id=run.thread_id, run_id=run.run_id)
    )
    assert joined.run.status == run_pb2.RUN_STATUS_SUCCESS


def create_run(thread_id: str, **fields: Any) -> run_service_pb2.CreateRunRequest:
    fields.setdefault("assistant_id", "echo")
    return run_service_pb2.CreateRunRequest(thread_id=thread_id, **fields)


def page_token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


# NOT_FOUND


async def test_unknown_thread_is_not_found_thread_not_found(stubs: Stubs) -> None:
    thread_id = random_id()

    error = await failure(
        lambda: stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id=thread_id))
    )

    assert_error(error, grpc.StatusCode.NOT_FOUND, "THREAD_NOT_FOUND", thread_id=thread_id)


async def test_run_on_unknown_thread_is_not_found_thread_not_found(stubs: Stubs) -> None:
    thread_id = random_id()

    error = await failure(lambda: stubs.runs.CreateRun(create_run(thread_id)))

    assert_error(error, grpc.StatusCode.NOT_FOUND, "THREAD_NOT_FOUND", thread_id=thread_id)


async def test_unknown_run_is_not_found_run_not_found(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    run_id = random_id()

    error = await failure(
        lambda: stubs.runs.GetRun(run_service_pb2.GetRunRequest(thread_id=thread_id, run_id=run_id))
    )

    assert_error(error, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", run_id=run_id)


async def test_run_of_another_thread_is_not_found_run_not_found(stubs: Stubs) -> None:
    run = await finished_run(stubs, await new_thread(stubs))
    other_thread_id = await new_thread(stubs)

    error = await failure(
        lambda: stubs.runs.GetRun(
            run_service_pb2.GetRunRequest(thread_id=other_thread_id, run_id=run.run_id)
        )
    )

    assert_error(error, grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND", run_id=run.run_id)


async def test_run_with_unknown_assistant_is_not_found_assistant_not_found(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(
        lambda: stubs.runs.CreateRun(create_run(thread_id, assistant_id="nosuch"))
    )

    assert_error(error, grpc.StatusCode.NOT_FOUND, "ASSISTANT_NOT_FOUND", assistant_id="nosuch")


async def test_unknown_assistant_is_not_found_assistant_not_found(stubs: Stubs) -> None:
    assistant_id = random_id()

    error = await failure(
        lambda: stubs.assistants.GetAssistant(
            assistant_service_pb2.GetAssistantRequest(assistant_id=assistant_id)
        )
    )

    assert_error(error, grpc.StatusCode.NOT_FOUND, "ASSISTANT_NOT_FOUND", assistant_id=assistant_id)


# INVALID_ARGUMENT


async def test_malformed_thread_id_is_invalid_argument_invalid_id(stubs: Stubs) -> None:
    error = await failure(
        lambda: stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id="nope"))
    )

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ID", field="thread_id")


async def test_missing_thread_id_is_invalid_argument_missing_field(stubs: Stubs) -> None:
    error = await failure(lambda: stubs.runs.CreateRun(create_run("")))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD", field="thread_id")


async def test_unknown_graph_is_invalid_argument_unknown_graph(stubs: Stubs) -> None:
    error = await failure(
        lambda: stubs.assistants.CreateAssistant(
            assistant_service_pb2.CreateAssistantRequest(graph_id="nosuch")
        )
    )

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_GRAPH")
    assert "nosuch" in error.message


@pytest.mark.parametrize(
    "run_input",
    [
        pytest.param({"messages": "hi"}, id="messages-as-a-string"),
        pytest.param({"messages": [{"role": "wizard", "content": "hi"}]}, id="unknown-role"),
        pytest.param({"messages": [{"role": "user"}]}, id="message-without-content"),
        pytest.param({"messages": [{"role": "user", "content": "hi"}], "x": math.nan}, id="nan"),
    ],
)
async def test_bad_input_shape_is_invalid_argument_invalid_input(
    stubs: Stubs, run_input: dict[str, Any]
) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(
        lambda: stubs.runs.CreateRun(create_run(thread_id, input=struct(run_input)))
    )

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")


@asynccontextmanager
async def langgraph_stubs(tmp_path: Path) -> AsyncIterator[Stubs]:
    """Stubs of a server whose test graphs are LangGraph graphs (`tests/lg_graphs.py`)."""
    async with (
        support.client_of(str(tmp_path / "lg.db"), lg_registry()) as (app, _),
        grpc.aio.insecure_channel(app.address) as channel,
    ):
        yield Stubs(channel)


@pytest.mark.parametrize(
    ("config", "run_input"),
    [
        pytest.param({"recursion_limit": 0}, None, id="recursion-limit-below-1"),
        pytest.param({"tags": "one"}, None, id="tags-not-a-list"),
        pytest.param({"configurable": {"a": 1}}, {"a": 1}, id="configurable-beside-context"),
    ],
)
async def test_a_config_langgraph_refuses_is_invalid_argument_invalid_config(
    tmp_path: Path, config: dict[str, Any], run_input: dict[str, Any] | None
) -> None:
    async with langgraph_stubs(tmp_path) as lg_stubs:
        thread_id = await new_thread(lg_stubs)
        request = create_run(thread_id, config=struct(config), input=human_input("hi"))
        if run_input is not None:
            request.context.CopyFrom(struct(run_input))
        error = await failure(lambda: lg_stubs.runs.CreateRun(request))
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_CONFIG")


def _unreadable(config: Any, runtime: Any) -> Any:
    """A factory that builds the echo graph for runs and raises for every state read."""
    if runtime.access_context != "threads.create_run":
        raise RuntimeError("this factory only builds graphs for runs")
    return GRAPHS["echo"]()


async def test_state_reads_of_a_thread_whose_graph_factory_fails_are_graph_unavailable(
    tmp_path: Path,
) -> None:
    graphs = lg_registry()
    graphs.register("unreadable", _unreadable)
    async with (
        support.client_of(str(tmp_path / "lg.db"), graphs) as (app, _),
        grpc.aio.insecure_channel(app.address) as channel,
    ):
        lg_stubs = Stubs(channel)
        thread_id = await new_thread(lg_stubs)
        ran = await lg_stubs.runs.WaitRun(
            run_service_pb2.WaitRunRequest(
                thread_id=thread_id, assistant_id="unreadable", input=human_input("hi")
            )
        )
        assert ran.run.status == run_pb2.RUN_STATUS_SUCCESS
        reads: list[Call] = [
            lambda: lg_stubs.threads.GetThreadState(
                thread_service_pb2.GetThreadStateRequest(thread_id=thread_id)
            ),
            lambda: lg_stubs.threads.GetThreadHistory(
                thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id)
            ),
            lambda: lg_stubs.threads.ListThreads(thread_service_pb2.ListThreadsRequest()),
            lambda: lg_stubs.threads.GetThread(
                thread_service_pb2.GetThreadRequest(thread_id=thread_id)
            ),
            lambda: lg_stubs.runs.JoinRun(
                run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=ran.run.run_id)
            ),
            lambda: lg_stubs.threads.UpdateThreadState(
                thread_service_pb2.UpdateThreadStateRequest(
                    thread_id=thread_id, values=struct({"messages": []})
                )
            ),
        ]
        for read in reads:
            error = await failure(read)
            assert_error(
                error,
                grpc.StatusCode.FAILED_PRECONDITION,
                "GRAPH_UNAVAILABLE",
                graph_id="unreadable",
            )
            assert "RuntimeError: this factory only builds graphs for runs" in error.message


async def test_input_a_langgraph_graphs_schema_refuses_is_invalid_argument_invalid_input(
    tmp_path: Path,
) -> None:
    async with langgraph_stubs(tmp_path) as lg_stubs:
        thread_id = await new_thread(lg_stubs)
        request = create_run(thread_id, assistant_id="gated", input=struct({"gates": 3}))
        error = await failure(lambda: lg_stubs.runs.CreateRun(request))
    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT")


@pytest.mark.parametrize(
    ("field", "make"),
    [
        pytest.param(
            "multitask_strategy",
            lambda thread_id: create_run(thread_id, multitask_strategy=99),
            id="multitask_strategy",
        ),
        pytest.param(
            "stream_mode",
            lambda thread_id: create_run(thread_id, stream_mode=[99]),
            id="stream_mode",
        ),
        pytest.param(
            "if_not_exists",
            lambda thread_id: create_run(thread_id, if_not_exists=99),
            id="if_not_exists",
        ),
    ],
)
async def test_out_of_range_enum_number_is_invalid_argument_invalid_enum(
    stubs: Stubs, field: str, make: Callable[[str], run_service_pb2.CreateRunRequest]
) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(lambda: stubs.runs.CreateRun(make(thread_id)))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ENUM", field=field)


async def test_out_of_range_cancel_action_is_invalid_argument_invalid_enum(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    run = await running_gated_run(stubs, thread_id, "g1")

    error = await failure(
        lambda: stubs.runs.CancelRun(
            run_service_pb2.CancelRunRequest(
                thread_id=thread_id, run_id=run.run_id, action=BAD_CANCEL_ACTION
            )
        )
    )

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ENUM", field="action")
    await release(stubs, run, "g1")


@pytest.mark.parametrize(
    "after_seconds",
    [
        pytest.param(-1.0, id="negative"),
        pytest.param(math.inf, id="infinite"),
        pytest.param(math.nan, id="nan"),
        pytest.param(1e300, id="beyond-any-timestamp"),
    ],
)
async def test_bad_after_seconds_is_invalid_argument_invalid_number(
    stubs: Stubs, after_seconds: float
) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(
        lambda: stubs.runs.CreateRun(create_run(thread_id, after_seconds=after_seconds))
    )

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NUMBER", field="after_seconds")


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("garbage", id="not-base64"),
        pytest.param(page_token("abc"), id="no-prefix"),
        pytest.param(page_token("c2:5"), id="other-version"),
        pytest.param(page_token("c1:five"), id="cursor-not-a-number"),
        pytest.param(page_token("c1:" + "9" * 30), id="cursor-beyond-int64"),
    ],
)
async def test_bad_page_token_is_invalid_argument_invalid_page_token(
    stubs: Stubs, token: str
) -> None:
    thread_id = await new_thread(stubs)
    calls: list[Call] = [
        lambda: stubs.threads.ListThreads(thread_service_pb2.ListThreadsRequest(page_token=token)),
        lambda: stubs.threads.GetThreadHistory(
            thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id, page_token=token)
        ),
        lambda: stubs.runs.ListRuns(
            run_service_pb2.ListRunsRequest(thread_id=thread_id, page_token=token)
        ),
        lambda: stubs.assistants.ListAssistants(
            assistant_service_pb2.ListAssistantsRequest(page_token=token)
        ),
    ]

    for call in calls:
        error = await failure(call)
        assert_error(
            error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", field="page_token"
        )


async def test_a_metadata_key_with_nul_is_invalid_argument_invalid_metadata_key(
    stubs: Stubs,
) -> None:
    # Found as INTERNAL: a filter on it was an SQLite "JSON path error"; a stored one would
    # match filters on what precedes the NUL.
    thread_id = await new_thread(stubs)
    bad = struct({"a\x00b": 1})
    calls: list[Call] = [
        lambda: stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest(metadata=bad)),
        lambda: stubs.threads.UpdateThread(
            thread_service_pb2.UpdateThreadRequest(thread_id=thread_id, metadata=bad)
        ),
        lambda: stubs.threads.ListThreads(thread_service_pb2.ListThreadsRequest(metadata=bad)),
        lambda: stubs.assistants.CreateAssistant(
            assistant_service_pb2.CreateAssistantRequest(graph_id="echo", metadata=bad)
        ),
        lambda: stubs.assistants.ListAssistants(
            assistant_service_pb2.ListAssistantsRequest(metadata=bad)
        ),
        lambda: stubs.runs.CreateRun(
            run_service_pb2.CreateRunRequest(thread_id=thread_id, assistant_id="echo", metadata=bad)
        ),
    ]

    for call in calls:
        error = await failure(call)
        assert_error(
            error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_METADATA_KEY", field="metadata"
        )


# ALREADY_EXISTS


async def test_creating_a_thread_with_a_taken_id_is_already_exists(stubs: Stubs) -> None:
    thread_id = random_id()
    request = thread_service_pb2.CreateThreadRequest(thread_id=thread_id)
    await stubs.threads.CreateThread(request)

    error = await failure(lambda: stubs.threads.CreateThread(request))

    assert_error(error, grpc.StatusCode.ALREADY_EXISTS, "ALREADY_EXISTS", thread_id=thread_id)


# ABORTED


async def test_reject_on_a_busy_thread_is_aborted_thread_busy_naming_the_inflight_run(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    running = await running_gated_run(stubs, thread_id, "g1")

    error = await failure(
        lambda: stubs.runs.CreateRun(
            create_run(thread_id, multitask_strategy=run_pb2.MULTITASK_STRATEGY_REJECT)
        )
    )

    assert_error(
        error,
        grpc.StatusCode.ABORTED,
        "THREAD_BUSY",
        thread_id=thread_id,
        inflight_run_ids=running.run_id,
    )
    runs = await stubs.runs.ListRuns(run_service_pb2.ListRunsRequest(thread_id=thread_id))
    assert [run.run_id for run in runs.runs] == [running.run_id]
    await release(stubs, running, "g1")


# FAILED_PRECONDITION


async def test_cancelling_a_finished_run_is_failed_precondition_run_not_active(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    run = await finished_run(stubs, thread_id)

    error = await failure(
        lambda: stubs.runs.CancelRun(
            run_service_pb2.CancelRunRequest(thread_id=thread_id, run_id=run.run_id)
        )
    )

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_NOT_ACTIVE",
        run_id=run.run_id,
        status="success",
    )


async def test_deleting_a_running_run_is_failed_precondition_run_active(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    run = await running_gated_run(stubs, thread_id, "g1")

    error = await failure(
        lambda: stubs.runs.DeleteRun(
            run_service_pb2.DeleteRunRequest(thread_id=thread_id, run_id=run.run_id)
        )
    )

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "RUN_ACTIVE",
        run_id=run.run_id,
        status="running",
    )
    await release(stubs, run, "g1")


# OUT_OF_RANGE


async def test_joining_a_finished_stream_beyond_its_end_is_out_of_range_stream_expired(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    run = await finished_run(stubs, thread_id)

    async def join_beyond_the_end() -> None:
        request = run_service_pb2.JoinRunStreamRequest(
            thread_id=thread_id, run_id=run.run_id, after_seq=1000
        )
        async for _ in stubs.runs.JoinRunStream(request):
            pass

    error = await failure(join_beyond_the_end)

    assert_error(error, grpc.StatusCode.OUT_OF_RANGE, "STREAM_EXPIRED", run_id=run.run_id)


# Whatever the mistake: no traceback, never UNKNOWN, always ErrorInfo, and the server lives on.


async def test_no_error_carries_a_traceback_and_the_server_still_answers(
    app: App, stubs: Stubs
) -> None:
    thread_id = await new_thread(stubs)
    finished = await finished_run(stubs, thread_id)
    nan = struct({"x": math.nan})
    mistakes: list[Call] = [
        lambda: stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id="nope")),
        lambda: stubs.threads.GetThread(thread_service_pb2.GetThreadRequest()),
        lambda: stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id=random_id())),
        lambda: stubs.threads.CreateThread(
            thread_service_pb2.CreateThreadRequest(thread_id=thread_id)
        ),
        lambda: stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest(metadata=nan)),
        lambda: stubs.threads.CreateThread(
            thread_service_pb2.CreateThreadRequest(if_exists=BAD_IF_EXISTS)
        ),
        lambda: stubs.threads.ListThreads(
            thread_service_pb2.ListThreadsRequest(status=BAD_THREAD_STATUS)
        ),
        lambda: stubs.threads.ListThreads(thread_service_pb2.ListThreadsRequest(page_size=-1)),
        lambda: stubs.threads.ListThreads(
            thread_service_pb2.ListThreadsRequest(page_token=page_token("c1:" + "9" * 30))
        ),
        lambda: stubs.threads.UpdateThread(
            thread_service_pb2.UpdateThreadRequest(thread_id=random_id())
        ),
        lambda: stubs.threads.DeleteThread(thread_service_pb2.DeleteThreadRequest(thread_id="x")),
        lambda: stubs.threads.GetThreadState(
            thread_service_pb2.GetThreadStateRequest(thread_id=random_id())
        ),
        lambda: stubs.threads.GetThreadHistory(
            thread_service_pb2.GetThreadHistoryRequest(thread_id=thread_id, page_token="@@")
        ),
        lambda: stubs.assistants.CreateAssistant(assistant_service_pb2.CreateAssistantRequest()),
        lambda: stubs.assistants.CreateAssistant(
            assistant_service_pb2.CreateAssistantRequest(graph_id="echo", assistant_id="nope")
        ),
        lambda: stubs.assistants.GetAssistant(assistant_service_pb2.GetAssistantRequest()),
        lambda: stubs.assistants.DeleteAssistant(
            assistant_service_pb2.DeleteAssistantRequest(assistant_id="echo")
        ),
        lambda: stubs.assistants.DeleteAssistant(
            assistant_service_pb2.DeleteAssistantRequest(assistant_id=random_id())
        ),
        lambda: stubs.runs.CreateRun(create_run(thread_id, assistant_id="")),
        lambda: stubs.runs.CreateRun(create_run(thread_id, input=struct({"messages": 5}))),
        lambda: stubs.runs.CreateRun(create_run(thread_id, config=nan)),
        lambda: stubs.runs.CreateRun(create_run(thread_id, after_seconds=1e300)),
        lambda: stubs.runs.WaitRun(run_service_pb2.WaitRunRequest(thread_id=thread_id)),
        lambda: stubs.runs.GetRun(run_service_pb2.GetRunRequest(thread_id=thread_id, run_id="r")),
        lambda: stubs.runs.ListRuns(run_service_pb2.ListRunsRequest(thread_id=random_id())),
        lambda: stubs.runs.ListRuns(
            run_service_pb2.ListRunsRequest(thread_id=thread_id, status=BAD_RUN_STATUS)
        ),
        lambda: stubs.runs.DeleteRun(
            run_service_pb2.DeleteRunRequest(thread_id=thread_id, run_id=random_id())
        ),
        lambda: stubs.runs.CancelRun(
            run_service_pb2.CancelRunRequest(thread_id=thread_id, run_id=finished.run_id)
        ),
        lambda: stubs.runs.JoinRun(run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id="")),
    ]

    for index, mistake in enumerate(mistakes):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mistake()
        error = caught.value
        details = error.details() or ""
        assert "Traceback" not in details, (index, details)
        assert 'File "' not in details, (index, details)
        assert error.code() != grpc.StatusCode.UNKNOWN, (index, details)
        info = error_info(error)
        assert info.domain == DOMAIN, (index, info)
        assert info.reason, (index, info)
        assert not any("Traceback" in value for value in info.metadata.values()), (index, info)

    created = await stubs.threads.CreateThread(thread_service_pb2.CreateThreadRequest())
    assert created.thread.status == thread_pb2.THREAD_STATUS_IDLE
    assert (await finished_run(stubs, created.thread.thread_id)).attempt == 1
    async with grpc.aio.insecure_channel(app.address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


# Client mistakes are INVALID_ARGUMENT, not INTERNAL: these reach code that used to crash.


async def test_non_finite_number_in_metadata_is_invalid_argument(stubs: Stubs) -> None:
    error = await failure(
        lambda: stubs.threads.CreateThread(
            thread_service_pb2.CreateThreadRequest(metadata=struct({"score": math.inf}))
        )
    )

    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.domain == DOMAIN, error


# The LangGraph and human-in-the-loop fields of run creation and of the thread state.

INTERRUPT_ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("field", "command", "with_input"),
    [
        pytest.param("command", run_pb2.Command(), False, id="empty"),
        pytest.param(
            "command.resume_by_id",
            run_pb2.Command(
                resume=struct_pb2.Value(string_value="yes"),
                resume_by_id={INTERRUPT_ID: struct_pb2.Value(string_value="no")},
            ),
            False,
            id="resume-and-resume_by_id",
        ),
        pytest.param(
            "command.resume_by_id",
            run_pb2.Command(resume_by_id={"ask": struct_pb2.Value(string_value="no")}),
            False,
            id="resume_by_id-key-not-an-interrupt-id",
        ),
        pytest.param(
            "command",
            run_pb2.Command(resume=struct_pb2.Value(bool_value=True)),
            True,
            id="with-input",
        ),
        pytest.param("command.goto", run_pb2.Command(goto=[""]), False, id="empty-goto-node"),
    ],
)
async def test_a_malformed_command_is_invalid_argument_invalid_command(
    stubs: Stubs, field: str, command: run_pb2.Command, with_input: bool
) -> None:
    thread_id = await new_thread(stubs)
    request = create_run(thread_id, command=command)
    if with_input:
        request.input.CopyFrom(human_input("hi"))

    error = await failure(lambda: stubs.runs.CreateRun(request))

    code = grpc.StatusCode.INVALID_ARGUMENT
    expected = "INVALID_NODE_NAMES" if field == "command.goto" else "INVALID_COMMAND"
    assert_error(error, code, expected, field=field)


@pytest.mark.parametrize(
    "nodes",
    [
        pytest.param(["*", "tools"], id="star-with-a-node"),
        pytest.param([""], id="empty-name"),
        pytest.param(["n" * 300], id="too-long"),
    ],
)
@pytest.mark.parametrize("field", ["interrupt_before", "interrupt_after"])
async def test_bad_interrupt_nodes_are_invalid_argument_invalid_node_names(
    stubs: Stubs, field: str, nodes: list[str]
) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(lambda: stubs.runs.CreateRun(create_run(thread_id, **{field: nodes})))

    assert_error(error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NODE_NAMES", field=field)


async def test_a_malformed_checkpoint_id_is_invalid_argument_invalid_id(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)

    run_error = await failure(
        lambda: stubs.runs.CreateRun(create_run(thread_id, checkpoint_id="latest"))
    )
    state_error = await failure(
        lambda: stubs.threads.GetThreadState(
            thread_service_pb2.GetThreadStateRequest(thread_id=thread_id, checkpoint_id="x")
        )
    )

    code = grpc.StatusCode.INVALID_ARGUMENT
    assert_error(run_error, code, "INVALID_ID", field="checkpoint_id")
    assert_error(state_error, code, "INVALID_ID", field="checkpoint_id")


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        pytest.param(
            "command",
            {"command": run_pb2.Command(resume=struct_pb2.Value(string_value="yes"))},
            id="command",
        ),
        pytest.param("interrupt_before", {"interrupt_before": ["*"]}, id="interrupt_before"),
        pytest.param("interrupt_after", {"interrupt_after": ["echo"]}, id="interrupt_after"),
        pytest.param("checkpoint_id", {"checkpoint_id": random_id()}, id="checkpoint_id"),
    ],
)
async def test_human_in_the_loop_on_a_native_graph_is_failed_precondition_unsupported_by_graph(
    stubs: Stubs, field: str, fields: dict[str, Any]
) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(lambda: stubs.runs.CreateRun(create_run(thread_id, **fields)))

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "UNSUPPORTED_BY_GRAPH",
        field=field,
        graph_id="echo",
        runtime="native",
    )
    listed: run_service_pb2.ListRunsResponse = await stubs.runs.ListRuns(
        run_service_pb2.ListRunsRequest(thread_id=thread_id)
    )
    assert not listed.runs  # refused before admission: nothing was written


async def test_updating_a_native_threads_state_is_failed_precondition_unsupported_by_graph(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)
    await finished_run(stubs, thread_id)

    error = await failure(
        lambda: stubs.threads.UpdateThreadState(
            thread_service_pb2.UpdateThreadStateRequest(
                thread_id=thread_id, values=struct({"x": 1}), as_node="echo"
            )
        )
    )

    assert_error(
        error, grpc.StatusCode.FAILED_PRECONDITION, "UNSUPPORTED_BY_GRAPH", graph_id="echo"
    )


async def test_updating_a_thread_that_never_ran_is_failed_precondition_thread_has_no_graph(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(
        lambda: stubs.threads.UpdateThreadState(
            thread_service_pb2.UpdateThreadStateRequest(thread_id=thread_id, values=struct({}))
        )
    )

    assert_error(
        error, grpc.StatusCode.FAILED_PRECONDITION, "THREAD_HAS_NO_GRAPH", thread_id=thread_id
    )


async def test_an_unknown_checkpoint_is_not_found_checkpoint_not_found(stubs: Stubs) -> None:
    thread_id = await new_thread(stubs)
    await finished_run(stubs, thread_id)
    missing = random_id()

    error = await failure(
        lambda: stubs.threads.GetThreadState(
            thread_service_pb2.GetThreadStateRequest(thread_id=thread_id, checkpoint_id=missing)
        )
    )

    assert_error(error, grpc.StatusCode.NOT_FOUND, "CHECKPOINT_NOT_FOUND", checkpoint_id=missing)


async def test_an_out_of_range_on_pending_interrupt_is_invalid_argument_invalid_enum(
    stubs: Stubs,
) -> None:
    thread_id = await new_thread(stubs)

    error = await failure(
        lambda: stubs.runs.CreateRun(create_run(thread_id, on_pending_interrupt=99))
    )

    assert_error(
        error, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ENUM", field="on_pending_interrupt"
    )


# Human in the loop: admission refuses what cannot be resumed (a LangGraph graph that asks).


@pytest.fixture
async def hitl_stubs(tmp_path: Any) -> AsyncIterator[Stubs]:
    from tests.hitl_graphs import hitl_registry

    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        database=str(tmp_path / "hitl.db"),
        on_pending_interrupt="reject",  # the server-wide option
    )
    server = await App.start(config, hitl_registry())
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield Stubs(channel)
    finally:
        await server.stop(grace=0)


async def waiting_thread(stubs: Stubs) -> tuple[str, str]:
    """A thread whose `approval` run stopped at its question; it and the interrupt's id."""
    thread_id = await new_thread(stubs)
    done = await stubs.runs.WaitRun(
        run_service_pb2.WaitRunRequest(
            thread_id=thread_id, assistant_id="approval", input=struct({"request": "x"})
        )
    )
    assert done.run.status == run_pb2.RUN_STATUS_SUCCESS
    thread = await stubs.threads.GetThread(thread_service_pb2.GetThreadRequest(thread_id=thread_id))
    assert thread.thread.interruption == thread_pb2.INTERRUPTION_AWAITING_INPUT
    return thread_id, thread.thread.interrupts[0].id


def resume(thread_id: str, command: run_pb2.Command, **fields: Any) -> Any:
    return run_service_pb2.CreateRunRequest(
        thread_id=thread_id, assistant_id="approval", command=command, **fields
    )


async def test_resuming_an_idle_thread_is_failed_precondition_nothing_to_resume(
    hitl_stubs: Stubs,
) -> None:
    thread_id = await new_thread(hitl_stubs)
    command = run_pb2.Command(resume=struct_pb2.Value(string_value="yes"))

    error = await failure(lambda: hitl_stubs.runs.CreateRun(resume(thread_id, command)))

    assert_error(
        error, grpc.StatusCode.FAILED_PRECONDITION, "NOTHING_TO_RESUME", thread_id=thread_id
    )


async def test_resuming_an_interrupt_not_pending_is_failed_precondition_unknown_interrupt(
    hitl_stubs: Stubs,
) -> None:
    thread_id, pending = await waiting_thread(hitl_stubs)
    command = run_pb2.Command(resume_by_id={INTERRUPT_ID: struct_pb2.Value(bool_value=True)})

    error = await failure(lambda: hitl_stubs.runs.CreateRun(resume(thread_id, command)))

    assert_error(
        error,
        grpc.StatusCode.FAILED_PRECONDITION,
        "UNKNOWN_INTERRUPT",
        interrupt_ids=INTERRUPT_ID,
        pending_interrupt_ids=pending,
    )


async def test_new_input_while_awaiting_input_is_failed_precondition_awaiting_input(
    hitl_stubs: Stubs,
) -> None:
    thread_id, pending = await waiting_thread(hitl_stubs)
    request = create_run(thread_id, assistant_id="approval", input=struct({"request": "y"}))
    discard = create_run(
        thread_id,
        assistant_id="approval",
        input=struct({"request": "z"}),
        on_pending_interrupt=run_pb2.ON_PENDING_INTERRUPT_DISCARD,
    )

    error = await failure(lambda: hitl_stubs.runs.CreateRun(request))
    admitted = await hitl_stubs.runs.CreateRun(discard)  # the run's own option wins

    assert_error(
        error, grpc.StatusCode.FAILED_PRECONDITION, "AWAITING_INPUT", pending_interrupt_ids=pending
    )
    assert list(admitted.run.discarded_interrupts) == [pending]
    await hitl_stubs.runs.JoinRun(
        run_service_pb2.JoinRunRequest(thread_id=thread_id, run_id=admitted.run.run_id)
    )
