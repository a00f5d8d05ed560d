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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        CheckpointRef,
        CheckpointSource,
        Command,
        Durability,
        IfExists,
        IfNotExists,
        Interrupt,
        Interruption,
        Json,
        MultitaskStrategy,
        OnDisconnect,
        OnPendingInterrupt,
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
        ThreadTask,
        ThreadUpdateStateResponse,
    )

# Public names load on first use (PEP 562), so that importing the generated code
# (`turnstile.v1.*_pb2`, which the server imports) does not load the SDK's transport: grpc
# channels, tenacity and the clients.
_MODULES: dict[str, str] = {
    "AssistantsClient": "turnstile._assistants",
    "TurnstileClient": "turnstile._client",
    "get_client": "turnstile._client",
    "AlreadyExistsError": "turnstile._errors",
    "ConflictError": "turnstile._errors",
    "DataLossError": "turnstile._errors",
    "DeadlineExceededError": "turnstile._errors",
    "FailedPreconditionError": "turnstile._errors",
    "InternalError": "turnstile._errors",
    "InvalidArgumentError": "turnstile._errors",
    "NotFoundError": "turnstile._errors",
    "OutOfRangeError": "turnstile._errors",
    "PermissionDeniedError": "turnstile._errors",
    "RequestCancelledError": "turnstile._errors",
    "ResourceExhaustedError": "turnstile._errors",
    "TurnstileError": "turnstile._errors",
    "UnauthenticatedError": "turnstile._errors",
    "UnavailableError": "turnstile._errors",
    "UnimplementedError": "turnstile._errors",
    "UnknownError": "turnstile._errors",
    "RunsClient": "turnstile._runs",
    "RunStream": "turnstile._stream",
    "ThreadStream": "turnstile._stream",
    "SyncAssistantsClient": "turnstile._sync",
    "SyncRunsClient": "turnstile._sync",
    "SyncRunStream": "turnstile._sync",
    "SyncThreadsClient": "turnstile._sync",
    "SyncThreadStream": "turnstile._sync",
    "SyncTurnstileClient": "turnstile._sync",
    "get_sync_client": "turnstile._sync",
    "ThreadsClient": "turnstile._threads",
    "Assistant": "turnstile._types",
    "CancelAction": "turnstile._types",
    "Checkpoint": "turnstile._types",
    "CheckpointSource": "turnstile._types",
    "Durability": "turnstile._types",
    "IfExists": "turnstile._types",
    "IfNotExists": "turnstile._types",
    "Json": "turnstile._types",
    "MultitaskStrategy": "turnstile._types",
    "OnDisconnect": "turnstile._types",
    "Run": "turnstile._types",
    "RunError": "turnstile._types",
    "RunResult": "turnstile._types",
    "RunStatus": "turnstile._types",
    "StreamMode": "turnstile._types",
    "StreamPart": "turnstile._types",
    "Thread": "turnstile._types",
    "ThreadState": "turnstile._types",
    "ThreadStatus": "turnstile._types",
    "ThreadStreamPart": "turnstile._types",
    "CheckpointRef": "turnstile._types",
    "Command": "turnstile._types",
    "Interrupt": "turnstile._types",
    "Interruption": "turnstile._types",
    "OnPendingInterrupt": "turnstile._types",
    "ThreadTask": "turnstile._types",
    "ThreadUpdateStateResponse": "turnstile._types",
}

__all__ = [
    "AlreadyExistsError",
    "Assistant",
    "AssistantsClient",
    "CancelAction",
    "Checkpoint",
    "CheckpointRef",
    "CheckpointSource",
    "Command",
    "ConflictError",
    "DataLossError",
    "DeadlineExceededError",
    "Durability",
    "FailedPreconditionError",
    "IfExists",
    "IfNotExists",
    "InternalError",
    "Interrupt",
    "Interruption",
    "InvalidArgumentError",
    "Json",
    "MultitaskStrategy",
    "NotFoundError",
    "OnDisconnect",
    "OnPendingInterrupt",
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
    "ThreadTask",
    "ThreadUpdateStateResponse",
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


# Hidden from type checkers, which would otherwise accept any name as `Any`.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Loads a public name from the module that defines it, on first use."""
        module = _MODULES.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        """The module's names, the ones not loaded yet included."""
        return sorted([*globals(), *_MODULES])
