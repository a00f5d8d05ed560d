"""`buf curl` against a real `turnstile serve`, knowing the contract only through reflection.

This is what a user without Python does: the pinned buf from the root `package.json`, no
.proto files, plain JSON in and out. `tests/test_reflection_json.py` checks the same from Python.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1.health import SERVICE_NAME as HEALTH_SERVICE
from grpc_reflection.v1alpha.reflection import SERVICE_NAME as REFLECTION_SERVICE

from tests.processes import ROOT, Completed, run_command, serving
from tests.rpc import DOMAIN, random_id
from turnstile.v1 import assistant_service_pb2, run_service_pb2, thread_service_pb2

# Installing buf on first use downloads it; every buf call below has its own deadline.
pytestmark = pytest.mark.timeout(300)

GRAPH = "recording=tests.support:recording"
CALL_TIMEOUT = 30.0
INSTALL_TIMEOUT = 240.0
PINNED_BUF = ROOT / "node_modules" / ".bin" / "buf"
CONTRACT = [
    service
    for module in (assistant_service_pb2, thread_service_pb2, run_service_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
]


@pytest.fixture(scope="session")
def buf() -> Path:
    """The pinned buf, installed with npm as CI installs it when it is not there yet."""
    if not PINNED_BUF.exists():
        npm = shutil.which("npm")
        if npm is None:
            on_path = shutil.which("buf")
            if on_path is None:
                pytest.skip(
                    "no buf: node_modules/.bin/buf is missing, no npm to install it, none on PATH"
                )
            return Path(on_path)
        # Not `npm ci`: the lock file holds only one platform's buf binary (see .ci/run).
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--no-save"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        assert installed.returncode == 0, f"npm install failed:\n{installed.stderr}"
        assert PINNED_BUF.exists(), f"npm install did not provide {PINNED_BUF}"
    return PINNED_BUF


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    """The base URL of a fresh `turnstile serve` process."""
    async with serving(tmp_path / "buf.db", GRAPH) as (_, address):
        yield f"http://{address}"


async def curl(buf: Path, url: str, *flags: str, data: Any = None) -> Completed:
    """Runs `buf curl` over plaintext gRPC (h2c) with reflection, the request as JSON text."""
    arguments = [str(buf), "curl", "--protocol", "grpc", "--http2-prior-knowledge", *flags]
    if data is not None:
        arguments += ["--data", json.dumps(data)]
    return await run_command(*arguments, url, seconds=CALL_TIMEOUT)


def documents(text: str) -> list[Any]:
    """The JSON documents buf printed one after another (each one indented over many lines)."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    position = 0
    while (position := _skip_space(text, position)) < len(text):
        document, position = decoder.raw_decode(text, position)
        found.append(document)
    return found


def _skip_space(text: str, position: int) -> int:
    return len(text) - len(text[position:].lstrip())


def error_info(value: str) -> error_details_pb2.ErrorInfo:
    """Decodes a detail's `value`: the message's bytes in base64, unpadded as Connect prints."""
    return error_details_pb2.ErrorInfo.FromString(base64.b64decode(value + "=" * (-len(value) % 4)))


async def test_buf_curl_lists_every_service_and_method_through_reflection(
    buf: Path, url: str
) -> None:
    services = await curl(buf, url, "--list-services")
    methods = await curl(buf, url, "--list-methods")

    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == {
        *(service.full_name for service in CONTRACT),
        HEALTH_SERVICE,
        REFLECTION_SERVICE,
    }
    assert methods.returncode == 0, methods.stderr
    listed = set(methods.stdout.split())
    assert {
        f"{service.full_name}/{method.name}" for service in CONTRACT for method in service.methods
    } <= listed
    assert f"{HEALTH_SERVICE}/Check" in listed


async def test_buf_curl_creates_a_thread_from_plain_json(buf: Path, url: str) -> None:
    thread_id = random_id()

    created = await curl(
        buf,
        f"{url}/turnstile.v1.ThreadService/CreateThread",
        data={"thread_id": thread_id, "metadata": {"user": "ada"}},
    )
    fetched = await curl(
        buf, f"{url}/turnstile.v1.ThreadService/GetThread", data={"threadId": thread_id}
    )

    assert created.returncode == 0, created.stderr
    [response] = documents(created.stdout)
    assert response["thread"]["threadId"] == thread_id
    assert response["thread"]["metadata"] == {"user": "ada"}
    assert response["thread"]["status"] == "THREAD_STATUS_IDLE"
    assert fetched.returncode == 0, fetched.stderr
    assert documents(fetched.stdout) == [response]


async def test_buf_curl_streams_a_run_as_json_messages_ending_with_end(buf: Path, url: str) -> None:
    created = await curl(buf, f"{url}/turnstile.v1.ThreadService/CreateThread", data={})
    thread_id = documents(created.stdout)[0]["thread"]["threadId"]

    streamed = await curl(
        buf,
        f"{url}/turnstile.v1.RunService/StreamRun",
        data={
            "thread_id": thread_id,
            "assistant_id": "recording",
            "input": {"steps": 2},
            "stream_mode": ["STREAM_MODE_VALUES", "STREAM_MODE_UPDATES"],
        },
    )

    assert streamed.returncode == 0, streamed.stderr
    responses = documents(streamed.stdout)
    assert len(responses) > 1, "a server stream, one JSON document per message"
    run = responses[0]["run"]
    assert run["threadId"] == thread_id
    assert all("run" not in response for response in responses[1:])
    events = [event for response in responses for event in response.get("events", [])]
    # int64 is a JSON string in the proto3 JSON mapping.
    assert [int(event["seq"]) for event in events] == list(range(1, len(events) + 1))
    assert {event["runId"] for event in events} == {run["runId"]}
    assert events[0]["event"] == "metadata"
    final_values = [event["data"] for event in events if event["event"] == "values"][-1]
    assert [message["type"] for message in final_values["messages"]] == ["ai", "ai"]
    assert "updates" in {event["event"] for event in events}
    assert events[-1]["event"] == "end"
    assert events[-1]["data"]["status"] == "success"


@pytest.mark.parametrize(
    ("method", "body", "reason"),
    [
        ("turnstile.v1.ThreadService/GetThread", {"thread_id": "not-a-uuid"}, "INVALID_ID"),
        (
            "turnstile.v1.AssistantService/CreateAssistant",
            {"graph_id": "no-such-graph"},
            "UNKNOWN_GRAPH",
        ),
    ],
    ids=["invalid-uuid", "unknown-graph"],
)
async def test_buf_curl_bad_request_is_invalid_argument_with_its_error_info(
    buf: Path, url: str, method: str, body: dict[str, str], reason: str
) -> None:
    failed = await curl(buf, f"{url}/{method}", data=body)

    # buf exits with the gRPC code shifted left three bits, and prints the status as JSON.
    assert failed.returncode == grpc.StatusCode.INVALID_ARGUMENT.value[0] << 3, failed.stderr
    assert failed.stdout == ""
    [status] = documents(failed.stderr)
    assert status["code"] == "invalid_argument"
    assert status["message"].strip()
    assert "Traceback" not in failed.stderr
    [detail] = status["details"]
    assert detail["type"] == "google.rpc.ErrorInfo"
    info = error_info(detail["value"])
    assert (info.reason, info.domain) == (reason, DOMAIN)


# The human-in-the-loop walkthrough of docs/grpcurl.md, on the approval example's graph.

APPROVAL = "approval=turnstile_tools.approval:graph"


@pytest.fixture
async def approval_url(tmp_path: Path) -> AsyncIterator[str]:
    """The base URL of a `turnstile serve` process serving the approval example's graph."""
    async with serving(tmp_path / "hitl.db", APPROVAL) as (_, address):
        yield f"http://{address}"


async def call(buf: Path, url: str, method: str, body: dict[str, Any]) -> list[Any]:
    """One `buf curl` call that must succeed; its JSON documents."""
    done = await curl(buf, f"{url}/turnstile.v1.{method}", data=body)
    assert done.returncode == 0, f"{method}: {done.stderr}"
    return documents(done.stdout)


def said(values: dict[str, Any]) -> str:
    """The content of the thread's last message."""
    return str(values["messages"][-1]["content"])


async def test_buf_curl_walks_the_human_in_the_loop_flow_in_plain_json(
    buf: Path, approval_url: str
) -> None:
    url, thread_id = approval_url, random_id()
    await call(buf, url, "ThreadService/CreateThread", {"threadId": thread_id})
    thread = {"threadId": thread_id, "assistantId": "approval"}

    # A run stops at the graph's interrupt(): it ends SUCCESS, the thread waits for input.
    [stopped] = await call(
        buf,
        url,
        "RunService/WaitRun",
        {**thread, "input": {"messages": [{"role": "user", "content": "pay bob 100"}]}},
    )
    [waiting] = await call(buf, url, "ThreadService/GetThread", {"threadId": thread_id})
    [listed] = await call(
        buf, url, "ThreadService/ListThreads", {"interruption": "INTERRUPTION_AWAITING_INPUT"}
    )
    [state] = await call(buf, url, "ThreadService/GetThreadState", {"threadId": thread_id})
    # Resuming with a value: what interrupt() returns.
    [approved] = await call(
        buf, url, "RunService/WaitRun", {**thread, "command": {"resume": {"approved": True}}}
    )
    # Nothing to resume any more: FAILED_PRECONDITION with its reason.
    refused = await curl(
        buf, f"{url}/turnstile.v1.RunService/CreateRun", data={**thread, "command": {"resume": 1}}
    )

    assert stopped["run"]["status"] == "RUN_STATUS_SUCCESS"
    assert (waiting["thread"]["status"], waiting["thread"]["interruption"]) == (
        "THREAD_STATUS_INTERRUPTED",
        "INTERRUPTION_AWAITING_INPUT",
    )
    [pending] = waiting["thread"]["interrupts"]
    assert pending["value"]["question"] == "Approve this payment?"
    assert thread_id in {t["threadId"] for t in listed["threads"]}
    assert state["checkpoint"]["next"] == ["review"]
    assert [i["id"] for i in state["checkpoint"]["interrupts"]] == [pending["id"]]
    assert approved["run"]["status"] == "RUN_STATUS_SUCCESS"
    assert said(approved["values"]) == "Done: sent $100 to bob."
    assert refused.returncode == grpc.StatusCode.FAILED_PRECONDITION.value[0] << 3
    [status] = documents(refused.stderr)
    assert error_info(status["details"][0]["value"]).reason == "NOTHING_TO_RESUME"

    # interruptBefore stops before a node with no interrupt value; UpdateThreadState writes
    # as if a node had returned values; a run without input continues; resumeById answers.
    streamed = await call(
        buf,
        url,
        "RunService/StreamRun",
        {
            **thread,
            "input": {"messages": [{"role": "user", "content": "pay ann 5"}]},
            "interruptBefore": ["review"],
            "streamMode": ["STREAM_MODE_UPDATES"],
        },
    )
    end = [e for r in streamed for e in r.get("events", [])][-1]
    [updated] = await call(
        buf,
        url,
        "ThreadService/UpdateThreadState",
        {
            "threadId": thread_id,
            "values": {"action": {"tool": "send_payment", "to": "ann", "amount": 7}},
            "asNode": "propose",
        },
    )
    [asked] = await call(buf, url, "RunService/WaitRun", thread)
    [again] = await call(buf, url, "ThreadService/GetThread", {"threadId": thread_id})
    [question] = again["thread"]["interrupts"]
    [declined] = await call(
        buf,
        url,
        "RunService/WaitRun",
        {**thread, "command": {"resumeById": {question["id"]: "no"}}},
    )
    [done] = await call(buf, url, "ThreadService/GetThread", {"threadId": thread_id})

    assert (end["event"], end["data"]["awaiting_input"], end["data"]["next"]) == (
        "end",
        True,
        ["review"],
    )
    assert end["data"]["interrupts"] == []
    assert updated["checkpoint"]["threadId"] == thread_id
    assert asked["run"]["status"] == "RUN_STATUS_SUCCESS"
    assert question["value"]["action"]["amount"] == 7  # the update's action, not the message's
    assert said(declined["values"]) == "Cancelled: nothing was sent."
    assert done["thread"]["status"] == "THREAD_STATUS_IDLE"
