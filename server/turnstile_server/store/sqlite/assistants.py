"""Assistants created with `CreateAssistant` (the graphs' built-in ones live in the registry)."""

from __future__ import annotations

from typing import Any

from turnstile_server.errors import AlreadyExists, AssistantNotFound
from turnstile_server.store.records import AssistantRecord
from turnstile_server.store.sqlite.database import Database, Session
from turnstile_server.store.sqlite.rows import assistant_from_row, dumps, metadata_filter


class Assistants:
    """The `assistants` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, record: AssistantRecord, *, if_exists: str) -> AssistantRecord:
        """Inserts the assistant; with `if_exists="do_nothing"` an existing one is returned."""

        def create(conn: Session) -> AssistantRecord:
            row = conn.one(
                "SELECT * FROM assistants WHERE assistant_id = ?", (record.assistant_id,)
            )
            if row is not None:
                if if_exists == "do_nothing":
                    return assistant_from_row(row)
                raise AlreadyExists(
                    f"assistant {record.assistant_id} already exists",
                    metadata={"assistant_id": record.assistant_id},
                )
            conn.execute(
                "INSERT INTO assistants (assistant_id, graph_id, name, config, metadata,"
                " create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    record.assistant_id,
                    record.graph_id,
                    record.name,
                    dumps(record.config),
                    dumps(record.metadata),
                    record.create_time,
                    record.update_time,
                ),
            )
            return record

        return await self._db.write(create)

    async def get(self, assistant_id: str) -> AssistantRecord:
        """Returns the assistant or raises AssistantNotFound."""
        row = await self._db.fetchone(
            "SELECT * FROM assistants WHERE assistant_id = ?", (assistant_id,)
        )
        if row is None:
            raise AssistantNotFound(assistant_id)
        return assistant_from_row(row)

    async def list(
        self, *, graph_id: str, metadata: dict[str, Any], limit: int, before: int | None
    ) -> tuple[list[AssistantRecord], int | None]:
        """Lists assistants newest first; returns the page and the next cursor."""
        where, params = metadata_filter("metadata", metadata)
        if graph_id:
            where += " AND graph_id = ?"
            params.append(graph_id)
        if before is not None:
            where += " AND rowid < ?"
            params.append(before)
        rows = await self._db.fetchall(
            f"SELECT rowid AS cursor, * FROM assistants WHERE {where} ORDER BY rowid DESC LIMIT ?",
            [*params, limit + 1],
        )
        page = rows[:limit]
        cursor = page[-1]["cursor"] if len(rows) > limit else None
        return [assistant_from_row(r) for r in page], cursor

    async def delete(self, assistant_id: str) -> None:
        """Deletes the assistant or raises AssistantNotFound."""

        def delete(conn: Session) -> None:
            cur = conn.execute("DELETE FROM assistants WHERE assistant_id = ?", (assistant_id,))
            if cur.rowcount == 0:
                raise AssistantNotFound(assistant_id)

        await self._db.write(delete)
