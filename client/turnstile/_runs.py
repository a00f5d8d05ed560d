"""`client.runs`: admitting, observing, cancelling and joining runs."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Unpack

from turnstile._convert import CANCEL_ACTION, CONVERSIONS, RUN_STATUS, run_to_dict, values_to_dict
from turnstile._fields import field_writer
from turnstile._paging import page_through
from turnstile._stream import RunStream, StreamMessage
from turnstile._transport import Transport
from turnstile._types import (
    CancelAction,
    Json,
    Run,
    RunArguments,
    RunResult,
    RunStatus,
    StreamRunArguments,
)
from turnstile.v1 import run_service_pb2 as pb

_ADMISSION = field_writer(pb.CreateRunRequest.DESCRIPTOR, RunArguments, CONVERSIONS)
_STREAM_ADMISSION = field_writer(pb.StreamRunRequest.DESCRIPTOR, StreamRunArguments, CONVERSIONS)
"""`RunArguments` as the fields of an admission request (the three have the same fields;
`StreamRunRequest` also `on_disconnect`)."""


def _admission(
    encode: Callable[[Mapping[str, Any]], dict[str, Any]],
    thread_id: str,
    assistant_id: str,
    arguments: Mapping[str, Any],
) -> dict[str, Any]:
    """Validates and encodes an admission's arguments, with a `request_id` if it has none."""
    fields = encode(arguments)
    fields["request_id"] = fields.get("request_id") or str(uuid.uuid4())
    return {"thread_id": thread_id, "assistant_id": assistant_id, **fields}


class RunsClient:
    """Admits runs with a multitask strategy, and observes, cancels, joins and deletes them.

    The admission methods (`create`, `wait`, `wait_run`, `stream`) take the thread, the
    assistant and the keyword arguments `RunArguments` lists (`stream` also
    `on_disconnect`): `input`, `metadata` and `config` are JSON objects, `multitask_strategy`
    is "reject", "interrupt", "rollback" or "enqueue" (the server default), `request_id` an
    idempotency key (generated when omitted), and so on. An unknown string raises
    `ValueError`, an unknown argument `TypeError`, before any call is made. A native graph
    refuses `command`, `interrupt_before`, `interrupt_after` and `checkpoint_id` with
    `FailedPreconditionError` (reason `UNSUPPORTED_BY_GRAPH`).
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create(
        self, thread_id: str, assistant_id: str, **arguments: Unpack[RunArguments]
    ) -> Run:
        """Admits a run in the background and returns it (pending or running).

        With "reject" on a busy thread this raises `ConflictError` (reason `THREAD_BUSY`).
        A `request_id` is generated when omitted, so the call is safely retried.
        """
        request = pb.CreateRunRequest(**_admission(_ADMISSION, thread_id, assistant_id, arguments))
        response = await self._transport.unary(
            lambda s: s.runs.CreateRun, request, pb.CreateRunResponse, retry=True
        )
        return run_to_dict(response.run)

    async def wait(
        self, thread_id: str, assistant_id: str, **arguments: Unpack[RunArguments]
    ) -> Json:
        """Admits a run, waits for it to end and returns its final values.

        A run that fails or is interrupted is not an exception: use `wait_run` to see how it
        ended. No deadline unless the client has a `timeout`.
        """
        return (await self.wait_run(thread_id, assistant_id, **arguments)).values

    async def wait_run(
        self, thread_id: str, assistant_id: str, **arguments: Unpack[RunArguments]
    ) -> RunResult:
        """Like `wait`, but returns `RunResult(run, values)`: the run as it ended, and values."""
        request = pb.WaitRunRequest(**_admission(_ADMISSION, thread_id, assistant_id, arguments))
        response = await self._transport.unary(
            lambda s: s.runs.WaitRun, request, pb.WaitRunResponse, retry=True, waits=True
        )
        return RunResult(run_to_dict(response.run), values_to_dict(response))

    def stream(
        self, thread_id: str, assistant_id: str, **arguments: Unpack[StreamRunArguments]
    ) -> RunStream:
        """Admits a run and returns its events as an async iterator of `StreamPart`s.

        `stream_mode` is "values" when omitted. The arguments are checked now; the call starts
        on the first iteration. Besides the selected modes, `metadata`, `error` and a final
        `end` event always come. The stream's `run` attribute holds the admitted `Run` once the
        first message has arrived.

        A broken call is resumed: before the run is known by sending the same request again
        (a `request_id` is generated when omitted, so the run is admitted once), then by
        joining its stream after the last part seen. See `RunStream` for the reconnect policy.
        """
        arguments.setdefault("stream_mode", "values")
        request = pb.StreamRunRequest(
            **_admission(_STREAM_ADMISSION, thread_id, assistant_id, arguments)
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
