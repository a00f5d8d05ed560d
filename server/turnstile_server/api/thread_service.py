"""`ThreadService`: threads, their state and their history."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from turnstile.v1 import thread_service_pb2 as pb
from turnstile.v1 import thread_service_pb2_grpc as pb_grpc
from turnstile_server.api import json_values, wire
from turnstile_server.api.rpc_errors import encoded
from turnstile_server.errors import InvalidArgument, RequestIdReused
from turnstile_server.event_log import check_position, follow
from turnstile_server.events import EventHub
from turnstile_server.ids import new_id
from turnstile_server.scheduler import Scheduler
from turnstile_server.store import Store, ThreadRecord


class ThreadService(pb_grpc.ThreadServiceServicer):
    """Creates, reads, lists, updates, deletes and watches threads."""

    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        hub: EventHub,
        *,
        page_bytes: int = wire.MAX_PAGE_BYTES,
    ) -> None:
        self._store = store
        self._scheduler = scheduler
        self._hub = hub
        self._page_bytes = page_bytes

    async def _message(self, thread: ThreadRecord, context: Any) -> Any:
        state, _ = await self._store.checkpoints.state(thread.thread_id)
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
        metadata = wire.metadata(request.metadata)
        threads, next_cursor = await self._store.threads.list(
            status=status, metadata=metadata, limit=limit, before=cursor
        )
        page = wire.PageBytes(self._page_bytes)
        messages = []
        for thread in threads:
            message = await self._message(thread, context)
            if not page.take(message):
                break
            messages.append(message)
        if len(messages) < len(threads):  # cut by bytes: the next page starts after the last
            _, next_cursor = await self._store.threads.list(
                status=status, metadata=metadata, limit=len(messages), before=cursor
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
        await self._store.threads.get(thread_id)
        state, checkpoint = await self._store.checkpoints.state(thread_id)
        if json_values.wants_json(context):
            message = wire.checkpoint_message(checkpoint, {}, thread_id)
            message.values_json = json_values.state_json(state)
            return pb.GetThreadStateResponse(checkpoint=message)
        return pb.GetThreadStateResponse(
            checkpoint=wire.checkpoint_message(checkpoint, state.values, thread_id)
        )

    async def GetThreadHistory(
        self, request: pb.GetThreadHistoryRequest, context: Any
    ) -> pb.GetThreadHistoryResponse:
        thread_id = wire.uuid_id(request.thread_id, "thread_id")
        limit, cursor = wire.page(request.page_size, request.page_token, default=10)
        await self._store.threads.get(thread_id)
        history, next_cursor = await self._store.checkpoints.history(
            thread_id, limit=limit, before=cursor
        )
        json = json_values.wants_json(context)
        page = wire.PageBytes(self._page_bytes)
        messages = []
        for index, (record, values) in enumerate(history):
            if json:
                message = wire.checkpoint_message(record, {}, thread_id)
                message.values_json = json_values.values_json(values)
            else:
                message = wire.checkpoint_message(record, values, thread_id)
            if not page.take(message):
                next_cursor = history[index - 1][0].seq  # newest first: on after the last taken
                break
            messages.append(message)
        return pb.GetThreadHistoryResponse(
            checkpoints=messages, next_page_token=wire.next_token(next_cursor)
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
        async with self._hub.watching(thread_id) as log:
            check_position(log, request.after_seq, what=what)
            yield pb.WatchThreadResponse(thread=await self._message(thread, context))
            async for batch in follow(
                log,
                request.after_seq,
                self._hub.limits,
                what=what,
                budget=self._hub.send_budget,
            ):
                yield encoded(pb.WatchThreadResponse, b"".join(batch))
