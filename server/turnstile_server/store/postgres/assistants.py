"""Assistants created with `CreateAssistant` (the graphs' built-in ones live in the registry)."""

from __future__ import annotations

from typing import Any

from turnstile_server.errors import AlreadyExists, AssistantNotFound
from turnstile_server.store.postgres.database import Conn, Database
from turnstile_server.store.postgres.rows import (
    Params,
    assistant_from_row,
    dumps,
    filterable,
    metadata_filter,
)
from turnstile_server.store.records import AssistantRecord

_COLUMNS = "assistant_id, graph_id, name, config, metadata, create_time, update_time"


class Assistants:
    """The `assistants` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, record: AssistantRecord, *, if_exists: str) -> AssistantRecord:
        """Inserts the assistant; with `if_exists="do_nothing"` an existing one is returned."""

        async def create(conn: Conn) -> AssistantRecord:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM assistants WHERE assistant_id = $1", record.assistant_id
            )
            if row is not None:
                if if_exists == "do_nothing":
                    return assistant_from_row(row)
                raise AlreadyExists(
                    f"assistant {record.assistant_id} already exists",
                    metadata={"assistant_id": record.assistant_id},
                )
            await conn.execute(
                f"INSERT INTO assistants ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                record.assistant_id,
                record.graph_id,
                record.name,
                dumps(record.config),
                filterable(record.metadata),
                record.create_time,
                record.update_time,
            )
            return record

        return await self._db.write(create)

    async def get(self, assistant_id: str) -> AssistantRecord:
        """Returns the assistant or raises AssistantNotFound."""
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM assistants WHERE assistant_id = $1", assistant_id
        )
        if row is None:
            raise AssistantNotFound(assistant_id)
        return assistant_from_row(row)

    async def list(
        self, *, graph_id: str, metadata: dict[str, Any], limit: int, before: int | None
    ) -> tuple[list[AssistantRecord], int | None]:
        """Lists assistants newest first; returns the page and the next cursor."""
        params = Params()
        where = metadata_filter("metadata", metadata, params)
        if graph_id:
            where += f" AND graph_id = {params.add(graph_id)}"
        if before is not None:
            where += f" AND seq < {params.add(before)}"
        rows = await self._db.fetch(
            f"SELECT seq, {_COLUMNS} FROM assistants WHERE {where}"
            f" ORDER BY seq DESC LIMIT {params.add(limit + 1)}",
            *params.values,
        )
        page = rows[:limit]
        cursor = page[-1]["seq"] if len(rows) > limit else None
        return [assistant_from_row(r) for r in page], cursor

    async def delete(self, assistant_id: str) -> None:
        """Deletes the assistant or raises AssistantNotFound."""

        async def delete(conn: Conn) -> None:
            gone = await conn.fetchval(
                "DELETE FROM assistants WHERE assistant_id = $1 RETURNING 1", assistant_id
            )
            if gone is None:
                raise AssistantNotFound(assistant_id)

        await self._db.write(delete)
