"""Raw gRPC helpers for end-to-end tests: typed stubs on one channel, and rich error statuses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2, status_pb2

from turnstile.v1 import (
    assistant_service_pb2_grpc,
    run_service_pb2,
    run_service_pb2_grpc,
    thread_service_pb2_grpc,
)

DOMAIN = "turnstile.v1"
DETAILS_KEY = "grpc-status-details-bin"


class Stubs:
    """The async stubs of the three Turnstile services on one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.assistants = assistant_service_pb2_grpc.AssistantServiceStub(channel)
        self.threads = thread_service_pb2_grpc.ThreadServiceStub(channel)
        self.runs = run_service_pb2_grpc.RunServiceStub(channel)


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """What a failed call said: its code and message, and the `ErrorInfo` of its status."""

    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """Decodes the `google.rpc.Status` a failed call carries in its trailers, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY:
            assert isinstance(value, bytes), f"{DETAILS_KEY} is not binary: {value!r}"
            return status_pb2.Status.FromString(value)
    return None


def error_info(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """Returns the code, message and `ErrorInfo` of a failed call, checking they agree."""
    status = rich_status(error)
    assert status is not None, f"{error.code()} {error.details()!r} carries no google.rpc.Status"
    assert status.code == error.code().value[0], (status.code, error.code())
    assert status.message == error.details(), (status.message, error.details())
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1, f"expected one ErrorInfo in {status.details}"
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    return ErrorDetails(
        code=error.code(),
        message=error.details() or "",
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
    )


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    """Builds a Struct from a JSON dict."""
    message = struct_pb2.Struct()
    message.update(values)
    return message


def human_input(content: str) -> struct_pb2.Struct:
    """A run input holding one user message."""
    return struct({"messages": [{"role": "user", "content": content}]})


def random_id() -> str:
    """A fresh UUID that names nothing on the server."""
    return str(uuid.uuid4())


async def stream_events(
    responses: AsyncIterable[
        run_service_pb2.StreamRunResponse | run_service_pb2.JoinRunStreamResponse
    ],
) -> list[tuple[int, str, Any]]:
    """Collects a stream's events, unbatched, as (seq, event, data) tuples."""
    events: list[tuple[int, str, Any]] = []
    async for response in responses:
        for event in response.events:
            events.append((event.seq, event.event, json_format.MessageToDict(event.data)))
    return events
