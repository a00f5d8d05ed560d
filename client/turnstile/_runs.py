"""`client.runs`: admitting, observing, cancelling and joining runs."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

from turnstile._convert import (
    CANCEL_ACTION,
    DURABILITY,
    IF_NOT_EXISTS,
    MULTITASK_STRATEGY,
    ON_DISCONNECT,
    ON_PENDING_INTERRUPT,
    RUN_STATUS,
    command_message,
    node_names,
    run_to_dict,
    stream_modes,
    to_struct,
    values_to_dict,
)
from turnstile._paging import page_through
from turnstile._stream import RunStream, StreamMessage
from turnstile._transport import Transport
from turnstile._types import (
    CancelAction,
    Command,
    Durability,
    IfNotExists,
    Json,
    MultitaskStrategy,
    OnDisconnect,
    OnPendingInterrupt,
    Run,
    RunResult,
    RunStatus,
    StreamMode,
)
from turnstile.v1 import run_service_pb2 as pb


def _admission(
    thread_id: str,
    assistant_id: str,
    *,
    input: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    stream_mode: StreamMode | Sequence[StreamMode] | None,
    multitask_strategy: MultitaskStrategy | None,
    after_seconds: float | None,
    if_not_exists: IfNotExists | None,
    request_id: str | None,
    timeout_seconds: float | None = None,
    durability: Durability | None = None,
) -> dict[str, Any]:
    """Validates and encodes the fields shared by CreateRun, StreamRun and WaitRun."""
    return {
        "thread_id": thread_id,
        "assistant_id": assistant_id,
        "input": to_struct(input, "input"),
        "metadata": to_struct(metadata, "metadata"),
        "config": to_struct(config, "config"),
        "stream_mode": stream_modes(stream_mode),
        "multitask_strategy": MULTITASK_STRATEGY.encode(multitask_strategy),
        "after_seconds": after_seconds or 0.0,
        "if_not_exists": IF_NOT_EXISTS.encode(if_not_exists),
        "request_id": request_id or "",
        "timeout_seconds": timeout_seconds or 0.0,
        "durability": DURABILITY.encode(durability),
    }


def _options(
    *,
    command: Mapping[str, Any] | None,
    context: Mapping[str, Any] | None,
    stream_subgraphs: bool,
    interrupt_before: str | Sequence[str] | None,
    interrupt_after: str | Sequence[str] | None,
    checkpoint_id: str | None,
    close_tool_calls: bool | None,
    on_pending_interrupt: OnPendingInterrupt | None,
) -> dict[str, Any]:
    """Validates and encodes the LangGraph and human-in-the-loop fields of an admission."""
    options: dict[str, Any] = {
        "command": command_message(command),
        "context": to_struct(context, "context"),
        "stream_subgraphs": bool(stream_subgraphs),
        "interrupt_before": node_names(interrupt_before, "interrupt_before"),
        "interrupt_after": node_names(interrupt_after, "interrupt_after"),
        "checkpoint_id": checkpoint_id or "",
        "on_pending_interrupt": ON_PENDING_INTERRUPT.encode(on_pending_interrupt),
    }
    if close_tool_calls is not None:
        options["close_tool_calls"] = bool(close_tool_calls)
    return options


class RunsClient:
    """Admits runs with a multitask strategy, and observes, cancels, joins and deletes them.

    The admission methods (`create`, `wait`, `wait_run`, `stream`) take the same arguments:
    `input`, `metadata` and `config` are JSON objects; `stream_mode` is one of "values",
    "updates", "messages", "custom" or a list of them; `multitask_strategy` is "reject",
    "interrupt", "rollback" or "enqueue" (the server default); `after_seconds` delays the
    start; `if_not_exists` is "reject" (the default) or "create"; `request_id` is an
    idempotency key (generated when omitted); `timeout_seconds` limits each attempt of the run
    (the server's default otherwise); `durability` is when its checkpoints are written: "sync"
    (each step's before the next step), "async" (while the next step runs) or "exit" (when the
    run ends), the server's default otherwise. An unknown string raises `ValueError` before any
    call is made.

    For LangGraph graphs, with langgraph_sdk's names: `command` continues a thread waiting for
    input (`{"resume": value}`, `{"resume": {interrupt_id: value}}`, `{"update": {...}}`,
    `{"goto": "node"}`; not with `input`); `interrupt_before`/`interrupt_after` stop the run
    before/after these nodes ("*": every node); `checkpoint_id` continues from an earlier
    checkpoint (time travel); `context` is the graph's runtime context; `stream_subgraphs`
    streams subgraphs' events too. `close_tool_calls` says whether an interrupt closes the
    tool calls it leaves dangling (the server's default otherwise); `on_pending_interrupt` is
    what new input does on a thread waiting for input: "discard" its interrupts (LangGraph's
    behaviour, recorded on the run) or "reject" the run (`FailedPreconditionError`, reason
    `AWAITING_INPUT`). A native graph refuses `command`, `interrupt_before`,
    `interrupt_after` and `checkpoint_id` with `FailedPreconditionError` (reason
    `UNSUPPORTED_BY_GRAPH`).
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create(
        self,
        thread_id: str,
        assistant_id: str,
        *,
        input: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        stream_mode: StreamMode | Sequence[StreamMode] | None = None,
        multitask_strategy: MultitaskStrategy | None = None,
        after_seconds: float | None = None,
        if_not_exists: IfNotExists | None = None,
        request_id: str | None = None,
        timeout_seconds: float | None = None,
        durability: Durability | None = None,
        command: Command | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        stream_subgraphs: bool = False,
        interrupt_before: Literal["*"] | Sequence[str] | None = None,
        interrupt_after: Literal["*"] | Sequence[str] | None = None,
        checkpoint_id: str | None = None,
        close_tool_calls: bool | None = None,
        on_pending_interrupt: OnPendingInterrupt | None = None,
    ) -> Run:
        """Admits a run in the background and returns it (pending or running).

        With "reject" on a busy thread this raises `ConflictError` (reason `THREAD_BUSY`).
        A `request_id` is generated when omitted, so the call is safely retried.
        """
        options = _options(
            command=command,
            context=context,
            stream_subgraphs=stream_subgraphs,
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
            checkpoint_id=checkpoint_id,
            close_tool_calls=close_tool_calls,
            on_pending_interrupt=on_pending_interrupt,
        )
        request = pb.CreateRunRequest(
            **_admission(
                thread_id,
                assistant_id,
                input=input,
                metadata=metadata,
                config=config,
                stream_mode=stream_mode,
                multitask_strategy=multitask_strategy,
                after_seconds=after_seconds,
                if_not_exists=if_not_exists,
                request_id=request_id or str(uuid.uuid4()),
                timeout_seconds=timeout_seconds,
                durability=durability,
            ),
            **options,
        )
        response = await self._transport.unary(
            lambda s: s.runs.CreateRun, request, pb.CreateRunResponse, retry=True
        )
        return run_to_dict(response.run)

    async def wait(
        self,
        thread_id: str,
        assistant_id: str,
        *,
        input: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        stream_mode: StreamMode | Sequence[StreamMode] | None = None,
        multitask_strategy: MultitaskStrategy | None = None,
        after_seconds: float | None = None,
        if_not_exists: IfNotExists | None = None,
        request_id: str | None = None,
        timeout_seconds: float | None = None,
        durability: Durability | None = None,
        command: Command | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        stream_subgraphs: bool = False,
        interrupt_before: Literal["*"] | Sequence[str] | None = None,
        interrupt_after: Literal["*"] | Sequence[str] | None = None,
        checkpoint_id: str | None = None,
        close_tool_calls: bool | None = None,
        on_pending_interrupt: OnPendingInterrupt | None = None,
    ) -> Json:
        """Admits a run, waits for it to end and returns its final values.

        A run that fails or is interrupted is not an exception: use `wait_run` to see how it
        ended. No deadline unless the client has a `timeout`.
        """
        result = await self.wait_run(
            thread_id,
            assistant_id,
            input=input,
            metadata=metadata,
            config=config,
            stream_mode=stream_mode,
            multitask_strategy=multitask_strategy,
            after_seconds=after_seconds,
            if_not_exists=if_not_exists,
            request_id=request_id,
            timeout_seconds=timeout_seconds,
            durability=durability,
            command=command,
            context=context,
            stream_subgraphs=stream_subgraphs,
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
            checkpoint_id=checkpoint_id,
            close_tool_calls=close_tool_calls,
            on_pending_interrupt=on_pending_interrupt,
        )
        return result.values

    async def wait_run(
        self,
        thread_id: str,
        assistant_id: str,
        *,
        input: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        stream_mode: StreamMode | Sequence[StreamMode] | None = None,
        multitask_strategy: MultitaskStrategy | None = None,
        after_seconds: float | None = None,
        if_not_exists: IfNotExists | None = None,
        request_id: str | None = None,
        timeout_seconds: float | None = None,
        durability: Durability | None = None,
        command: Command | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        stream_subgraphs: bool = False,
        interrupt_before: Literal["*"] | Sequence[str] | None = None,
        interrupt_after: Literal["*"] | Sequence[str] | None = None,
        checkpoint_id: str | None = None,
        close_tool_calls: bool | None = None,
        on_pending_interrupt: OnPendingInterrupt | None = None,
    ) -> RunResult:
        """Like `wait`, but returns `RunResult(run, values)`: the run as it ended, and values."""
        options = _options(
            command=command,
            context=context,
            stream_subgraphs=stream_subgraphs,
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
            checkpoint_id=checkpoint_id,
            close_tool_calls=close_tool_calls,
            on_pending_interrupt=on_pending_interrupt,
        )
        request = pb.WaitRunRequest(
            **_admission(
                thread_id,
                assistant_id,
                input=input,
                metadata=metadata,
                config=config,
                stream_mode=stream_mode,
                multitask_strategy=multitask_strategy,
                after_seconds=after_seconds,
                if_not_exists=if_not_exists,
                request_id=request_id or str(uuid.uuid4()),
                timeout_seconds=timeout_seconds,
                durability=durability,
            ),
            **options,
        )
        response = await self._transport.unary(
            lambda s: s.runs.WaitRun, request, pb.WaitRunResponse, retry=True, waits=True
        )
        return RunResult(run_to_dict(response.run), values_to_dict(response))

    def stream(
        self,
        thread_id: str,
        assistant_id: str,
        *,
        input: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        stream_mode: StreamMode | Sequence[StreamMode] = "values",
        multitask_strategy: MultitaskStrategy | None = None,
        after_seconds: float | None = None,
        if_not_exists: IfNotExists | None = None,
        request_id: str | None = None,
        timeout_seconds: float | None = None,
        durability: Durability | None = None,
        command: Command | Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        stream_subgraphs: bool = False,
        interrupt_before: Literal["*"] | Sequence[str] | None = None,
        interrupt_after: Literal["*"] | Sequence[str] | None = None,
        checkpoint_id: str | None = None,
        close_tool_calls: bool | None = None,
        on_pending_interrupt: OnPendingInterrupt | None = None,
        on_disconnect: OnDisconnect | None = None,
    ) -> RunStream:
        """Admits a run and returns its events as an async iterator of `StreamPart`s.

        The arguments are checked now; the call starts on the first iteration. Besides the
        selected modes, `metadata`, `error` and a final `end` event always come. The stream's
        `run` attribute holds the admitted `Run` once the first message has arrived.

        `on_disconnect` says what the server does with the run when this client goes away
        before it ends: "continue" (the server default) or "cancel" (interrupt it). A broken
        call is resumed: before the run is known by sending the same request again (a
        `request_id` is generated when omitted, so the run is admitted once), then by joining
        its stream after the last part seen. See `RunStream` for the reconnect policy.
        """
        options = _options(
            command=command,
            context=context,
            stream_subgraphs=stream_subgraphs,
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
            checkpoint_id=checkpoint_id,
            close_tool_calls=close_tool_calls,
            on_pending_interrupt=on_pending_interrupt,
        )
        request = pb.StreamRunRequest(
            **_admission(
                thread_id,
                assistant_id,
                input=input,
                metadata=metadata,
                config=config,
                stream_mode=stream_mode,
                multitask_strategy=multitask_strategy,
                after_seconds=after_seconds,
                if_not_exists=if_not_exists,
                request_id=request_id or str(uuid.uuid4()),
                timeout_seconds=timeout_seconds,
                durability=durability,
            ),
            **options,
            on_disconnect=ON_DISCONNECT.encode(on_disconnect),
        )

        def open_messages(run: Run | None, after_seq: int) -> AsyncGenerator[StreamMessage, None]:
            if run is None:
                return self._transport.stream(
                    lambda s: s.runs.StreamRun, request, pb.StreamRunResponse
                )
            return self._join_stream_messages(thread_id, run["run_id"], after_seq)

        return RunStream(open_messages)

    async def get(self, thread_id: str, run_id: str) -> Run:
        """Returns one run; a rolled-back run raises `NotFoundError`."""
        response = await self._transport.unary(
            lambda s: s.runs.GetRun,
            pb.GetRunRequest(thread_id=thread_id, run_id=run_id),
            pb.GetRunResponse,
            retry=True,
        )
        return run_to_dict(response.run)

    async def list(
        self,
        thread_id: str,
        *,
        limit: int = 10,
        offset: int = 0,
        status: RunStatus | None = None,
    ) -> builtins.list[Run]:
        """Lists the thread's runs, newest first, optionally only those with `status`."""
        status_filter = RUN_STATUS.encode(status)

        async def fetch(page_size: int, page_token: str) -> tuple[Sequence[Run], str]:
            request = pb.ListRunsRequest(
                thread_id=thread_id,
                status=status_filter,
                page_size=page_size,
                page_token=page_token,
            )
            response = await self._transport.unary(
                lambda s: s.runs.ListRuns, request, pb.ListRunsResponse, retry=True
            )
            return [run_to_dict(r) for r in response.runs], response.next_page_token

        return await page_through(fetch, limit=limit, offset=offset)

    async def delete(self, thread_id: str, run_id: str) -> None:
        """Deletes a run that has ended.

        A pending or running run raises `FailedPreconditionError`; cancel it first.
        """
        await self._transport.unary(
            lambda s: s.runs.DeleteRun,
            pb.DeleteRunRequest(thread_id=thread_id, run_id=run_id),
            pb.DeleteRunResponse,
            retry=False,
        )

    async def cancel(
        self,
        thread_id: str,
        run_id: str,
        wait: bool = False,
        action: CancelAction = "interrupt",
    ) -> Run:
        """Cancels a pending or running run and returns it.

        `action` "interrupt" ends it interrupted, keeping its completed steps; "rollback"
        deletes it and its checkpoints. With `wait` the call returns once the run has stopped
        (no deadline unless the client has a `timeout`). A run that has already ended raises
        `FailedPreconditionError` (reason `RUN_NOT_ACTIVE`).
        """
        request = pb.CancelRunRequest(
            thread_id=thread_id, run_id=run_id, action=CANCEL_ACTION.encode(action), wait=wait
        )
        response = await self._transport.unary(
            lambda s: s.runs.CancelRun, request, pb.CancelRunResponse, retry=False, waits=wait
        )
        return run_to_dict(response.run)

    async def join(self, thread_id: str, run_id: str) -> Json:
        """Waits for a run to end and returns the values at its own last checkpoint.

        Not the thread's latest values: a later run's work is not included. Use `join_run` to
        see how the run ended. No deadline unless the client has a `timeout`.
        """
        return (await self.join_run(thread_id, run_id)).values

    async def join_run(self, thread_id: str, run_id: str) -> RunResult:
        """Like `join`, but returns `RunResult(run, values)`: the run as it ended, and values."""
        response = await self._transport.unary(
            lambda s: s.runs.JoinRun,
            pb.JoinRunRequest(thread_id=thread_id, run_id=run_id),
            pb.JoinRunResponse,
            retry=True,
            waits=True,
        )
        return RunResult(run_to_dict(response.run), values_to_dict(response))

    def join_stream(self, thread_id: str, run_id: str, *, after_seq: int = 0) -> RunStream:
        """Attaches to a run's events: replays those after `after_seq`, then follows live.

        Pass the `seq` of the last part you saw to resume without gap or duplicate. The call
        starts on the first iteration; a broken call is resumed after the last part seen (see
        `RunStream`). Events the server no longer retains raise `OutOfRangeError` (reason
        `STREAM_EXPIRED`).
        """
        if after_seq < 0:
            raise ValueError(f"after_seq must not be negative, got {after_seq}")
        return RunStream(
            lambda _run, after: self._join_stream_messages(thread_id, run_id, after),
            after_seq=after_seq,
        )

    def _join_stream_messages(
        self, thread_id: str, run_id: str, after_seq: int
    ) -> AsyncGenerator[StreamMessage, None]:
        request = pb.JoinRunStreamRequest(thread_id=thread_id, run_id=run_id, after_seq=after_seq)
        return self._transport.stream(
            lambda s: s.runs.JoinRunStream, request, pb.JoinRunStreamResponse
        )
