"""`AssistantService`: assistants, including the built-in one of every registered graph."""

from __future__ import annotations

import uuid
from typing import Any

from turnstile.v1 import assistant_service_pb2 as pb
from turnstile.v1 import assistant_service_pb2_grpc as pb_grpc
from turnstile_server.api import wire
from turnstile_server.errors import (
    AssistantInUse,
    AssistantNotFound,
    GraphServedElsewhere,
    InvalidArgument,
)
from turnstile_server.graph import GraphRegistry
from turnstile_server.ids import new_id
from turnstile_server.runtime.interface import PreparedGraph
from turnstile_server.store import AssistantRecord, Store
from turnstile_server.store.records import new_assistant


def builtin_assistant(graph_id: str) -> AssistantRecord:
    """The assistant every graph answers as, under its own id."""
    return AssistantRecord(graph_id, graph_id, graph_id, {}, {"created_by": "system"}, 0, 0)


async def resolve_assistant(
    store: Store, graphs: GraphRegistry, assistant_id: str
) -> AssistantRecord:
    """Finds an assistant by id or graph id, or raises AssistantNotFound / InvalidArgument;
    GraphServedElsewhere for the id of a graph only other replicas serve."""
    if not assistant_id:
        raise InvalidArgument(
            "assistant_id is required", reason="MISSING_FIELD", field="assistant_id"
        )
    if assistant_id in graphs:
        return builtin_assistant(assistant_id)
    try:
        canonical = str(uuid.UUID(assistant_id))
    except ValueError:
        await _served_elsewhere(store, assistant_id)  # maybe a graph's id
        raise AssistantNotFound(assistant_id) from None
    return await store.assistants.get(canonical)


async def runnable_assistant(
    store: Store, graphs: GraphRegistry, assistant_id: str
) -> tuple[AssistantRecord, PreparedGraph]:
    """The assistant a run names (`resolve_assistant`) and its graph (`served_graph`)."""
    assistant = await resolve_assistant(store, graphs, assistant_id)
    return assistant, await served_graph(store, graphs, assistant.graph_id)


async def served_graph(store: Store, graphs: GraphRegistry, graph_id: str) -> PreparedGraph:
    """The graph registered here as `graph_id`; on a database replicas share, a graph this
    replica lacks that another live replica serves is GraphServedElsewhere (UNAVAILABLE:
    retry there), not INVALID_ARGUMENT UnknownGraph."""
    if graph_id not in graphs:
        await _served_elsewhere(store, graph_id)
    return graphs.prepared(graph_id)


async def _served_elsewhere(store: Store, graph_id: str) -> None:
    """GraphServedElsewhere if live replicas on this database serve `graph_id` (this one
    does not)."""
    if store.replicas is None:
        return
    names = await store.replicas.serving(graph_id)
    if names:
        raise GraphServedElsewhere(graph_id, names)


class AssistantService(pb_grpc.AssistantServiceServicer):
    """Creates, reads, lists and deletes assistants."""

    def __init__(
        self, store: Store, graphs: GraphRegistry, *, page_bytes: int = wire.MAX_PAGE_BYTES
    ) -> None:
        self._store = store
        self._graphs = graphs
        self._page_bytes = page_bytes

    async def CreateAssistant(
        self, request: pb.CreateAssistantRequest, context: Any
    ) -> pb.CreateAssistantResponse:
        if not request.graph_id:
            raise InvalidArgument("graph_id is required", reason="MISSING_FIELD", field="graph_id")
        await served_graph(self._store, self._graphs, request.graph_id)
        assistant_id = wire.uuid_id(request.assistant_id, "assistant_id", required=False)
        record = new_assistant(
            assistant_id or new_id(),
            request.graph_id,
            request.name,
            wire.to_dict(request.config, "config"),
            wire.metadata(request.metadata),
        )
        if_exists = wire.enum_value(wire.IF_EXISTS, request.if_exists, "if_exists")
        created = await self._store.assistants.create(record, if_exists=if_exists)
        return pb.CreateAssistantResponse(assistant=wire.assistant_message(created))

    async def GetAssistant(
        self, request: pb.GetAssistantRequest, context: Any
    ) -> pb.GetAssistantResponse:
        record = await resolve_assistant(self._store, self._graphs, request.assistant_id)
        return pb.GetAssistantResponse(assistant=wire.assistant_message(record))

    async def ListAssistants(
        self, request: pb.ListAssistantsRequest, context: Any
    ) -> pb.ListAssistantsResponse:
        limit, cursor = wire.page(request.page_size, request.page_token, default=50)
        metadata = wire.metadata(request.metadata)
        # The built-in assistants come first, on the first page, in addition to `page_size`.
        builtins = (
            []
            if cursor is not None
            else [
                builtin_assistant(graph_id)
                for graph_id in self._graphs.ids()
                if request.graph_id in ("", graph_id)
            ]
        )
        builtins = [b for b in builtins if _matches(b.metadata, metadata)]
        records, next_cursor = await self._store.assistants.list(
            graph_id=request.graph_id, metadata=metadata, limit=limit, before=cursor
        )
        # The built-in ones always come (they are small); stored ones while the page fits,
        # at least one, so that a page token can follow it.
        messages = [wire.assistant_message(b) for b in builtins]
        page = wire.PageBytes(self._page_bytes - sum(m.ByteSize() for m in messages))
        for record in records:
            message = wire.assistant_message(record)
            if not page.take(message):
                break
            messages.append(message)
        if len(messages) < len(builtins) + len(records):
            _, next_cursor = await self._store.assistants.list(
                graph_id=request.graph_id,
                metadata=metadata,
                limit=len(messages) - len(builtins),
                before=cursor,
            )
        return pb.ListAssistantsResponse(
            assistants=messages, next_page_token=wire.next_token(next_cursor)
        )

    async def DeleteAssistant(
        self, request: pb.DeleteAssistantRequest, context: Any
    ) -> pb.DeleteAssistantResponse:
        if request.assistant_id in self._graphs:
            raise AssistantInUse(
                f"assistant {request.assistant_id} is a graph's built-in assistant",
                metadata={"assistant_id": request.assistant_id},
            )
        assistant_id = wire.uuid_id(request.assistant_id, "assistant_id")
        await self._store.assistants.delete(assistant_id)
        return pb.DeleteAssistantResponse()


def _matches(metadata: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(metadata.get(key) == value for key, value in wanted.items())
