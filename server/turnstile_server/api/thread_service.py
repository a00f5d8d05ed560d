"""`ThreadService`: threads, their state and their history."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import AsyncIterator
from typing import Any

from turnstile.v1 import thread_pb2
from turnstile.v1 import thread_service_pb2 as pb
from turnstile.v1 import thread_service_pb2_grpc as pb_grpc
from turnstile_server.api import json_values, wire
from turnstile_server.api.rpc_errors import encoded
from turnstile_server.api.snapshots import checkpoint_message, native_snapshot
from turnstile_server.errors import (
    CheckpointNotFound,
    InvalidArgument,
    OutOfRange,
    RequestIdReused,
    StateTooLarge,
    ThreadBusy,
    ThreadHasNoGraph,
    UnsupportedByGraph,
)
from turnstile_server.event_log import EventLog, check_position, follow
from turnstile_server.events import SEQ_EPOCH_BITS, EventHub
from turnstile_server.graph import GraphRegistry
from turnstile_server.ids import new_id
from turnstile_server.json_size import MAX_ANSWER_BYTES, struct_size
from turnstile_server.runtime.langgraph import updates
from turnstile_server.runtime.langgraph.runtime import LangGraphGraph
from turnstile_server.runtime.snapshot import GraphSnapshot
from turnstile_server.scheduler import Scheduler
from turnstile_server.store import Store, ThreadRecord
from turnstile_server.thread_states import ThreadStates

log = logging.getLogger(__name__)


class ThreadService(pb_grpc.ThreadServiceServicer):
    """Creates, reads, lists, updates, deletes and watches threads."""

    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        hub: EventHub,
        graphs: GraphRegistry | None = None,
        *,
        page_bytes: int = wire.MAX_PAGE_BYTES,
        max_state_bytes: int | None = None,
        answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        self._store = store
        self._max_state_bytes = max_state_bytes
        self._answer = wire.AnswerBytes(answer_bytes)
        self._scheduler = scheduler
        self._hub = hub
        self._graphs = graphs or GraphRegistry()
        self._page_bytes = page_bytes
        self._states = ThreadStates(store, self._graphs)

    async def _message(self, thread: ThreadRecord, context: Any) -> Any:
        """The thread on the wire; StateTooLarge when its state is more than an answer carries
        (stored before `--max-state-bytes` held it)."""
        if await self._states.langgraph_of(thread.thread_id) is not None:
            snapshot = await self._states.latest(thread.thread_id)
            if json_values.wants_json(context):
                message = wire.thread_message(thread, {})
                message.values_json = json_values.values_json(snapshot.values)
            else:
                message = wire.thread_message(thread, snapshot.values)
            return self._answer.checked(message, thread.thread_id)
        state, _ = await self._store.checkpoints.state(thread.thread_id)
        self._answer.check_state(state.size, thread.thread_id)  # before encoding it
        if json_values.wants_json(context):
            message = wire.thread_message(thread, {})
            message.values_json = json_values.state_json(state)
            return message
        return wire.thread_message(thread, state.values)

    async def CreateThread(
        self, request: pb.CreateThreadRequest, context: Any
    ) -> pb.CreateThreadResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id", required=False)
        thread = await self._store.threads.create(
            thread_id or new_id(),
            wire.metadata(request.metadata),
            if_exists=wire.enum_value(wire.IF_EXISTS, request.if_exists, "if_exists"),
            request_id=request.request_id,
        )
        if request.request_id and thread_id and thread_id != thread.thread_id:
            # Metadata is not compared: UpdateThread may have changed it since.
            raise RequestIdReused("thread", request.request_id, "thread_id")
        return pb.CreateThreadResponse(thread=await self._message(thread, context))

    async def GetThread(self, request: pb.GetThreadRequest, context: Any) -> pb.GetThreadResponse:
        thread = await self._store.threads.get(wire.uuid_id(request.thread_id, "thread_id"))
        return pb.GetThreadResponse(thread=await self._message(thread, context))

    async def ListThreads(
        self, request: pb.ListThreadsRequest, context: Any
    ) -> pb.ListThreadsResponse:
        limit, cursor = wire.page(request.page_size, request.page_token, default=50)
        status = wire.optional_enum(wire.THREAD_STATUSES, request.status, "status")
        interruption = wire.optional_enum(wire.INTERRUPTIONS, request.interruption, "interruption")
        metadata = wire.metadata(request.metadata)
        threads, next_cursor = await self._store.threads.list(
            status=status,
            metadata=metadata,
            limit=limit,
            before=cursor,
            interruption=interruption,
        )
        page = wire.PageBytes(self._page_bytes)
        messages = []
        taken = 0  # threads answered or left out
        for thread in threads:
            try:
                message = await self._message(thread, context)
            except StateTooLarge as exc:  # one thread must not make the listing unanswerable
                log.warning("ListThreads leaves out thread %s: %s", thread.thread_id, exc)
                taken += 1
                continue
            if not page.take(message):
                break
            messages.append(message)
            taken += 1
        if taken < len(threads):  # cut by bytes: the next page starts after the last
            _, next_cursor = await self._store.threads.list(
                status=status,
                metadata=metadata,
                limit=taken,
                before=cursor,
                interruption=interruption,
            )
        return pb.ListThreadsResponse(
            threads=messages, next_page_token=wire.next_token(next_cursor)
        )

    async def UpdateThread(
        self, request: pb.UpdateThreadRequest, context: Any
    ) -> pb.UpdateThreadResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        thread = await self._store.threads.update_metadata(
            thread_id, wire.metadata(request.metadata)
        )
        return pb.UpdateThreadResponse(thread=await self._message(thread, context))

    async def DeleteThread(
        self, request: pb.DeleteThreadRequest, context: Any
    ) -> pb.DeleteThreadResponse:
        await self._scheduler.delete_thread(wire.uuid_id(request.thread_id, "thread_id"))
        return pb.DeleteThreadResponse()

    async def GetThreadState(
        self, request: pb.GetThreadStateRequest, context: Any
    ) -> pb.GetThreadStateResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        checkpoint_id = wire.uuid_id(request.checkpoint_id, "checkpoint_id", required=False)
        await self._store.threads.get(thread_id)
        if await self._states.langgraph_of(thread_id) is not None:
            snapshot = await self._states.latest(thread_id, checkpoint_id or None)
            if checkpoint_id and snapshot.checkpoint is None:
                raise CheckpointNotFound(thread_id, checkpoint_id)
            message = _langgraph_message(snapshot, thread_id, json_values.wants_json(context))
            return pb.GetThreadStateResponse(checkpoint=self._answer.checked(message, thread_id))
        checkpoints = self._store.checkpoints
        if checkpoint_id:
            record = await checkpoints.find(thread_id, checkpoint_id)
            if record is None:
                raise CheckpointNotFound(thread_id, checkpoint_id)
            values = await checkpoints.values_at(thread_id, record.seq)
            self._answer.check_state(struct_size(values), thread_id)
            parent = await checkpoints.parent(thread_id, record.seq)
            snapshot = native_snapshot(record, values, parent, thread_id)
            message = checkpoint_message(snapshot, thread_id, values=False)
            if json_values.wants_json(context):
                message.values_json = json_values.values_json(values)
            else:
                message.values.CopyFrom(wire.to_struct(values))
            return pb.GetThreadStateResponse(checkpoint=message)
        state, checkpoint = await checkpoints.state(thread_id)
        self._answer.check_state(state.size, thread_id)
        parent = await checkpoints.parent(thread_id, checkpoint.seq) if checkpoint else None
        snapshot = native_snapshot(checkpoint, state.values, parent, thread_id)
        message = checkpoint_message(snapshot, thread_id, values=False)
        # The latest state encodes from the thread's cached state (its messages encoded once).
        if json_values.wants_json(context):
            message.values_json = json_values.state_json(state)
        else:
            message.values.CopyFrom(wire.to_struct(state.values, state=True))
        return pb.GetThreadStateResponse(checkpoint=message)

    async def UpdateThreadState(
        self, request: pb.UpdateThreadStateRequest, context: Any
    ) -> pb.UpdateThreadStateResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        checkpoint_id = wire.uuid_id(request.checkpoint_id, "checkpoint_id", required=False)
        values = wire.to_dict(request.values, "values") if request.HasField("values") else None
        thread = await self._store.threads.get(thread_id)
        runs, _ = await self._store.runs.list(thread_id, status=None, limit=1, before=None)
        if not runs:
            raise ThreadHasNoGraph(thread_id)
        graph_id = runs[0].graph_id
        prepared = self._graphs.prepared(graph_id) if graph_id in self._graphs else None
        if not isinstance(prepared, LangGraphGraph):
            runtime = prepared.runtime if prepared is not None else "unregistered"
            raise UnsupportedByGraph(
                f"UpdateThreadState writes through a LangGraph graph's reducers; thread"
                f" {thread_id} last ran graph '{graph_id}', a {runtime} graph",
                graph_id=graph_id,
                runtime=runtime,
                field="thread_id",
            )
        if thread.status == "busy":  # refused before the work; `apply_update` checks again
            inflight = [run.run_id for run in runs if run.inflight]
            raise ThreadBusy(thread_id, inflight)
        if checkpoint_id and not await self._store.langgraph.get(thread_id, "", checkpoint_id, {}):
            raise CheckpointNotFound(thread_id, checkpoint_id)
        updated = await updates.update_state(
            prepared,
            self._store.langgraph,
            self._store.threads.apply_update,  # refused there while a run is inflight
            thread_id,
            values,
            as_node=request.as_node or None,
            checkpoint_id=checkpoint_id or None,
            graph_id=graph_id,
            max_state_bytes=self._max_state_bytes,
        )
        ref = updated.checkpoint
        return pb.UpdateThreadStateResponse(
            checkpoint=thread_pb2.CheckpointRef(
                thread_id=ref.thread_id,
                checkpoint_ns=ref.checkpoint_ns,
                checkpoint_id=ref.checkpoint_id,
            )
        )

    async def GetThreadHistory(
        self, request: pb.GetThreadHistoryRequest, context: Any
    ) -> pb.GetThreadHistoryResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        await self._store.threads.get(thread_id)
        graph = await self._states.langgraph_of(thread_id)
        if graph is not None:
            return await self._langgraph_history(request, context, graph, thread_id)
        limit, cursor = wire.page(request.page_size, request.page_token, default=10)
        # One more than the page: the last entry's parent (history folds every row anyway).
        history, next_cursor = await self._store.checkpoints.history(
            thread_id, limit=limit + 1, before=cursor
        )
        if len(history) > limit:
            next_cursor = history[limit - 1][0].seq
        json = json_values.wants_json(context)
        page = wire.PageBytes(self._page_bytes)
        messages = []
        for index, (record, values) in enumerate(history[:limit]):
            parent = history[index + 1][0] if index + 1 < len(history) else None
            snapshot = native_snapshot(record, values, parent, thread_id)
            message = checkpoint_message(snapshot, thread_id, values=not json)
            if json:
                message.values_json = json_values.values_json(values)
            size = self._answer.fits(message, thread_id)
            if size is None:
                continue  # stored before `--max-state-bytes`: an answer cannot carry it
            if not page.take(message, size):
                next_cursor = history[index - 1][0].seq  # newest first: on after the last taken
                break
            messages.append(message)
        return pb.GetThreadHistoryResponse(
            checkpoints=messages, next_page_token=wire.next_token(next_cursor)
        )

    async def _langgraph_history(
        self,
        request: pb.GetThreadHistoryRequest,
        context: Any,
        graph: LangGraphGraph,
        thread_id: str,
    ) -> pb.GetThreadHistoryResponse:
        """A LangGraph thread's history page (`ThreadStates.langgraph_history`), capped in
        bytes like the native one; its page token names the checkpoint it goes on before."""
        limit, before = _langgraph_page(request.page_size, request.page_token)
        history, next_before = await self._states.langgraph_history(
            graph, thread_id, limit=limit, before=before
        )
        json = json_values.wants_json(context)
        page = wire.PageBytes(self._page_bytes)
        messages = []
        for index, snapshot in enumerate(history):
            message = _langgraph_message(snapshot, thread_id, json)
            size = self._answer.fits(message, thread_id)
            if size is None:
                continue  # stored before `--max-state-bytes`: an answer cannot carry it
            if not page.take(message, size):
                previous = history[index - 1].checkpoint
                next_before = previous.checkpoint_id if previous else None
                break
            messages.append(message)
        return pb.GetThreadHistoryResponse(
            checkpoints=messages, next_page_token=_langgraph_token(next_before)
        )

    async def WatchThread(
        self, request: pb.WatchThreadRequest, context: Any
    ) -> AsyncIterator[pb.WatchThreadResponse]:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        if request.after_seq < 0:
            raise InvalidArgument(
                "after_seq must be >= 0", reason="INVALID_NUMBER", field="after_seq"
            )
        thread = await self._store.threads.get(thread_id)
        what = {"thread_id": thread_id}
        relay = self._hub.relay
        async with self._hub.watching(thread_id) as log:
            _check_numbering(log, request.after_seq, what, relayed=relay is not None)
            after_seq, earlier = request.after_seq, []
            if relay is not None and 0 < after_seq < log.first_seq - 1:
                # Seen on another replica (or before this one's log): the stream has it.
                after_seq = log.first_seq - 1
                earlier = await relay.thread_backlog(thread_id, request.after_seq, after_seq)
            check_position(log, after_seq, what=what)
            yield pb.WatchThreadResponse(thread=await self._message(thread, context))
            limits = self._hub.limits
            for start in range(0, len(earlier), limits.batch_events):
                yield encoded(
                    pb.WatchThreadResponse, b"".join(earlier[start : start + limits.batch_events])
                )
            del earlier
            async for batch in follow(
                log,
                after_seq,
                limits,
                what=what,
                budget=self._hub.send_budget,
            ):
                yield encoded(pb.WatchThreadResponse, b"".join(batch))


def _check_numbering(
    log: EventLog, after_seq: int, what: dict[str, str], *, relayed: bool = False
) -> None:
    """STREAM_EXPIRED for an `after_seq` of another numbering than this watch log's.

    Without Redis each log of a thread (each time one is made) numbers from an epoch of its
    own (`threads.watch_epoch`), so such a seq is of an earlier log. With Redis every
    replica's log numbers by the thread's Redis stream, whose incarnation is the high bits:
    such a seq is of the stream before it expired or Redis restarted. Either way it names
    nothing here (rather than waiting for a seq this log may never reach, or skipping to one
    of its own)."""
    if not after_seq or after_seq >> SEQ_EPOCH_BITS == log.last_seq >> SEQ_EPOCH_BITS:
        return
    thread_id = what["thread_id"]
    if relayed:
        why = (
            f"after_seq {after_seq} is of an earlier Redis stream of thread {thread_id} (it"
            " expired, or Redis restarted): its events are lost; watch again with after_seq=0"
        )
    else:
        why = (
            f"after_seq {after_seq} is not of this replica's watch of thread {thread_id}"
            " (a watch's seq is the replica's it was opened on, while that replica keeps its"
            " log): resume it on the replica it was opened on, or watch again with"
            " after_seq=0"
        )
    raise OutOfRange(
        why, metadata={**what, "after_seq": str(after_seq), "first_seq": str(log.first_seq)}
    )


def _langgraph_message(snapshot: GraphSnapshot, thread_id: str, json: bool) -> Any:
    """A LangGraph state on the wire (its values are plain JSON already, not a `ThreadState`)."""
    message = checkpoint_message(snapshot, thread_id, values=False)
    if json:
        message.values_json = json_values.values_json(snapshot.values)
    else:
        message.values.CopyFrom(wire.to_struct(snapshot.values))
    return message


def _langgraph_page(page_size: int, page_token: str) -> tuple[int, str | None]:
    """The limit and the checkpoint id a LangGraph history page goes on before (its tokens
    name a LangGraph checkpoint id, where a native history's name a sequence number)."""
    limit, _ = wire.page(page_size, "", default=10)
    if not page_token:
        return limit, None
    try:
        text = base64.urlsafe_b64decode(page_token.encode()).decode()
        prefix, checkpoint_id = text.split(":", 1)
        if prefix != "g1" or not checkpoint_id:
            raise ValueError(prefix)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument(
            "page_token is not a token this server issued",
            reason="INVALID_PAGE_TOKEN",
            field="page_token",
        ) from None
    return limit, checkpoint_id


def _langgraph_token(before: str | None) -> str:
    return "" if before is None else base64.urlsafe_b64encode(f"g1:{before}".encode()).decode()
