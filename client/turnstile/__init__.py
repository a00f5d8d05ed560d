"""Turnstile's Python SDK: run AI-agent graphs on threads, with double-texting strategies.

Shaped like `langgraph_sdk`::

    from turnstile import get_client

    client = get_client(url="localhost:50051")
    thread = await client.threads.create()
    run = await client.runs.create(thread["thread_id"], "agent", input={...})
    values = await client.runs.join(thread["thread_id"], run["run_id"])

Results are plain dicts keyed by the proto field names; errors are `TurnstileError`
subclasses, one per gRPC status code.
"""

from __future__ import annotations

from turnstile._assistants import AssistantsClient
from turnstile._client import TurnstileClient, get_client
from turnstile._errors import (
    AlreadyExistsError,
    ConflictError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    RequestCancelledError,
    ResourceExhaustedError,
    TurnstileError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from turnstile._runs import RunsClient
from turnstile._stream import RunStream, ThreadStream
from turnstile._sync import (
    SyncAssistantsClient,
    SyncRunsClient,
    SyncRunStream,
    SyncThreadsClient,
    SyncThreadStream,
    SyncTurnstileClient,
    get_sync_client,
)
from turnstile._threads import ThreadsClient
from turnstile._types import (
    Assistant,
    CancelAction,
    Checkpoint,
    CheckpointSource,
    Durability,
    IfExists,
    IfNotExists,
    Json,
    MultitaskStrategy,
    OnDisconnect,
    Run,
    RunError,
    RunResult,
    RunStatus,
    StreamMode,
    StreamPart,
    Thread,
    ThreadState,
    ThreadStatus,
    ThreadStreamPart,
)

__all__ = [
    "AlreadyExistsError",
    "Assistant",
    "AssistantsClient",
    "CancelAction",
    "Checkpoint",
    "CheckpointSource",
    "ConflictError",
    "DataLossError",
    "DeadlineExceededError",
    "Durability",
    "FailedPreconditionError",
    "IfExists",
    "IfNotExists",
    "InternalError",
    "InvalidArgumentError",
    "Json",
    "MultitaskStrategy",
    "NotFoundError",
    "OnDisconnect",
    "OutOfRangeError",
    "PermissionDeniedError",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "Run",
    "RunError",
    "RunResult",
    "RunStatus",
    "RunStream",
    "RunsClient",
    "StreamMode",
    "StreamPart",
    "SyncAssistantsClient",
    "SyncRunStream",
    "SyncRunsClient",
    "SyncThreadStream",
    "SyncThreadsClient",
    "SyncTurnstileClient",
    "Thread",
    "ThreadState",
    "ThreadStatus",
    "ThreadStream",
    "ThreadStreamPart",
    "ThreadsClient",
    "TurnstileClient",
    "TurnstileError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "get_client",
    "get_sync_client",
]
