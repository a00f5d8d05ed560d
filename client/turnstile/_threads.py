"""`client.threads`: conversation threads, their state and history."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from turnstile._convert import (
    IF_EXISTS,
    INTERRUPTION,
    THREAD_STATUS,
    checkpoint_ref_to_dict,
    checkpoint_to_dict,
    thread_to_dict,
    to_struct,
)
from turnstile._paging import page_through
from turnstile._stream import ThreadStream, WatchMessage
from turnstile._transport import Transport
from turnstile._types import (
    IfExists,
    Interruption,
    Thread,
    ThreadState,
    ThreadStatus,
    ThreadUpdateStateResponse,
)
from turnstile.v1 import thread_service_pb2 as pb


class ThreadsClient:
    """Creates, reads, lists, updates and deletes threads; reads their state and history."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        thread_id: str | None = None,
        if_exists: IfExists | None = None,
        request_id: str | None = None,
    ) -> Thread:
        """Creates a thread and returns it.

        `if_exists` ("raise", the default, or "do_nothing") says what happens when `thread_id`
        is taken: `AlreadyExistsError`, or the existing thread is returned. `request_id` is an
        idempotency key; one is generated when omitted, so the call is safely retried.
        """
        request = pb.CreateThreadRequest(
            thread_id=thread_id or "",
            metadata=to_struct(metadata, "metadata"),
            if_exists=IF_EXISTS.encode(if_exists),
            request_id=request_id or str(uuid.uuid4()),
        )
        response = await self._transport.unary(
            lambda s: s.threads.CreateThread, request, pb.CreateThreadResponse, retry=True
        )
        return thread_to_dict(response.thread)

    async def get(self, thread_id: str) -> Thread:
        """Returns one thread with its current state."""
        response = await self._transport.unary(
            lambda s: s.threads.GetThread,
            pb.GetThreadRequest(thread_id=thread_id),
            pb.GetThreadResponse,
            retry=True,
        )
        return thread_to_dict(response.thread)

    async def update(self, thread_id: str, *, metadata: Mapping[str, Any]) -> Thread:
        """Merges `metadata` into the thread's metadata (other keys stay) and returns it."""
        request = pb.UpdateThreadRequest(
            thread_id=thread_id, metadata=to_struct(metadata, "metadata")
        )
        response = await self._transport.unary(
            lambda s: s.threads.UpdateThread, request, pb.UpdateThreadResponse, retry=False
        )
        return thread_to_dict(response.thread)

    async def delete(self, thread_id: str) -> None:
        """Stops the thread's runs, then deletes the thread, its runs and its checkpoints."""
        await self._transport.unary(
            lambda s: s.threads.DeleteThread,
            pb.DeleteThreadRequest(thread_id=thread_id),
            pb.DeleteThreadResponse,
            retry=False,
        )

    async def search(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        status: ThreadStatus | None = None,
        limit: int = 10,
        offset: int = 0,
        interruption: Interruption | None = None,
    ) -> list[Thread]:
        """Lists threads, newest first, optionally filtered by status and metadata.

        `metadata` matches threads whose metadata contains all its keys with these values;
        `interruption="awaiting_input"` keeps the threads waiting for input, "cancelled" the
        interrupted ones whose last run was cancelled.
        """
        status_filter = THREAD_STATUS.encode(status)
        interruption_filter = INTERRUPTION.encode(interruption)
        metadata_filter = to_struct(metadata, "metadata")

        async def fetch(page_size: int, page_token: str) -> tuple[Sequence[Thread], str]:
            request = pb.ListThreadsRequest(
                status=status_filter,
                metadata=metadata_filter,
                page_size=page_size,
                page_token=page_token,
                interruption=interruption_filter,
            )
            response = await self._transport.unary(
                lambda s: s.threads.ListThreads, request, pb.ListThreadsResponse, retry=True
            )
            return [thread_to_dict(t) for t in response.threads], response.next_page_token

        return await page_through(fetch, limit=limit, offset=offset)

    async def get_state(
        self,
        thread_id: str,
        checkpoint: Mapping[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> ThreadState:
        """Returns the thread's latest checkpoint, or the one named by `checkpoint_id` (or a
        langgraph_sdk `checkpoint` dict); `state["values"]` is the state there.

        The dict has langgraph_sdk's `ThreadState` keys (`next`, `tasks`, `interrupts`,
        `checkpoint`, `parent_checkpoint`, `metadata`, `created_at`) besides Turnstile's flat
        ones. A thread without checkpoints gives `values == {}` and `checkpoint_id is None`; an
        unknown checkpoint raises `NotFoundError` (reason `CHECKPOINT_NOT_FOUND`).
        """
        response = await self._transport.unary(
            lambda s: s.threads.GetThreadState,
            pb.GetThreadStateRequest(
                thread_id=thread_id, checkpoint_id=_checkpoint_id(checkpoint, checkpoint_id)
            ),
            pb.GetThreadStateResponse,
            retry=True,
        )
        return checkpoint_to_dict(response.checkpoint)

    async def update_state(
        self,
        thread_id: str,
        values: Mapping[str, Any] | None,
        *,
        as_node: str | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        checkpoint_id: str | None = None,
    ) -> ThreadUpdateStateResponse:
        """Writes a checkpoint as if `as_node` had returned `values`, through the graph's
        reducers, on the thread's latest checkpoint or the one named (forking the history).

        Returns `{"checkpoint": {...}}`, the checkpoint written. Needs a LangGraph graph: on a
        native graph's thread it raises `FailedPreconditionError` (`UNSUPPORTED_BY_GRAPH`).
        """
        request = pb.UpdateThreadStateRequest(
            thread_id=thread_id,
            values=to_struct(values, "values"),
            as_node=as_node or "",
            checkpoint_id=_checkpoint_id(checkpoint, checkpoint_id),
        )
        response = await self._transport.unary(
            lambda s: s.threads.UpdateThreadState,
            request,
            pb.UpdateThreadStateResponse,
            retry=False,
        )
        return {"checkpoint": checkpoint_ref_to_dict(response.checkpoint)}

    async def get_history(self, thread_id: str, *, limit: int = 10) -> list[ThreadState]:
        """Returns up to `limit` of the thread's checkpoints, newest first."""

        async def fetch(page_size: int, page_token: str) -> tuple[Sequence[ThreadState], str]:
            request = pb.GetThreadHistoryRequest(
                thread_id=thread_id, page_size=page_size, page_token=page_token
            )
            response = await self._transport.unary(
                lambda s: s.threads.GetThreadHistory,
                request,
                pb.GetThreadHistoryResponse,
                retry=True,
            )
            checkpoints = [checkpoint_to_dict(c) for c in response.checkpoints]
            return checkpoints, response.next_page_token

        return await page_through(fetch, limit=limit, offset=0)

    def watch(self, thread_id: str, *, after_seq: int = 0) -> ThreadStream:
        """Follows a thread: its runs starting and ending, and their events, until closed.

        Returns an async iterator of `ThreadStreamPart`s that replays the thread's retained
        events after `after_seq` (the `seq` of the last part you saw), then follows live; it
        never ends by itself. The call starts on the first iteration; a broken call is resumed
        after the last part seen (see `ThreadStream`). Events the server no longer retains
        raise `OutOfRangeError` (reason `STREAM_EXPIRED`).
        """
        if after_seq < 0:
            raise ValueError(f"after_seq must not be negative, got {after_seq}")

        def open_messages(after: int) -> AsyncGenerator[WatchMessage, None]:
            request = pb.WatchThreadRequest(thread_id=thread_id, after_seq=after)
            return self._transport.stream(
                lambda s: s.threads.WatchThread, request, pb.WatchThreadResponse
            )

        return ThreadStream(open_messages, after_seq=after_seq)


def _checkpoint_id(checkpoint: Mapping[str, Any] | None, checkpoint_id: str | None) -> str:
    """The checkpoint id asked for, given as an id or as langgraph_sdk's `checkpoint` dict."""
    if checkpoint_id:
        return checkpoint_id
    if checkpoint is not None:
        return str(checkpoint.get("checkpoint_id") or "")
    return ""
