"""`client.assistants`: registered graphs with their configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from turnstile._convert import IF_EXISTS, assistant_to_dict, to_struct
from turnstile._paging import page_through
from turnstile._transport import Transport
from turnstile._types import Assistant, IfExists
from turnstile.v1 import assistant_service_pb2 as pb


class AssistantsClient:
    """Creates, reads, lists and deletes assistants.

    Every registered graph also answers as an assistant under its own graph id, so
    `assistant_id="agent"` works without creating one.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def create(
        self,
        graph_id: str,
        config: Mapping[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        assistant_id: str | None = None,
        if_exists: IfExists | None = None,
        name: str | None = None,
    ) -> Assistant:
        """Creates an assistant for a registered graph and returns it.

        `if_exists` ("raise", the default, or "do_nothing") says what happens when
        `assistant_id` is taken: `AlreadyExistsError`, or the existing assistant is returned.
        """
        request = pb.CreateAssistantRequest(
            graph_id=graph_id,
            assistant_id=assistant_id or "",
            name=name or "",
            config=to_struct(config, "config"),
            metadata=to_struct(metadata, "metadata"),
            if_exists=IF_EXISTS.encode(if_exists),
        )
        response = await self._transport.unary(
            lambda s: s.assistants.CreateAssistant,
            request,
            pb.CreateAssistantResponse,
            retry=False,
        )
        return assistant_to_dict(response.assistant)

    async def get(self, assistant_id: str) -> Assistant:
        """Returns one assistant; a graph id gives the graph's built-in assistant."""
        response = await self._transport.unary(
            lambda s: s.assistants.GetAssistant,
            pb.GetAssistantRequest(assistant_id=assistant_id),
            pb.GetAssistantResponse,
            retry=True,
        )
        return assistant_to_dict(response.assistant)

    async def search(
        self,
        *,
        metadata: Mapping[str, Any] | None = None,
        graph_id: str | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Assistant]:
        """Lists assistants, the built-in ones first, optionally filtered by graph and metadata.

        `metadata` matches assistants whose metadata contains all its keys with these values.
        """
        metadata_filter = to_struct(metadata, "metadata")

        async def fetch(page_size: int, page_token: str) -> tuple[Sequence[Assistant], str]:
            request = pb.ListAssistantsRequest(
                graph_id=graph_id or "",
                metadata=metadata_filter,
                page_size=page_size,
                page_token=page_token,
            )
            response = await self._transport.unary(
                lambda s: s.assistants.ListAssistants,
                request,
                pb.ListAssistantsResponse,
                retry=True,
            )
            return [assistant_to_dict(a) for a in response.assistants], response.next_page_token

        return await page_through(fetch, limit=limit, offset=offset)

    async def delete(self, assistant_id: str) -> None:
        """Deletes an assistant made with `create`."""
        await self._transport.unary(
            lambda s: s.assistants.DeleteAssistant,
            pb.DeleteAssistantRequest(assistant_id=assistant_id),
            pb.DeleteAssistantResponse,
            retry=False,
        )
