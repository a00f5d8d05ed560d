"""The SQLite connections: one writer behind a lock, one reader; WAL; migrations on open."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from turnstile_server.store.schema import MIGRATIONS

log = logging.getLogger(__name__)

Row = sqlite3.Row


class Database:
    """A SQLite file opened for the server: writes serialised in `BEGIN IMMEDIATE` transactions."""

    def __init__(self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection):
        self.path = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Database:
        """Opens (creating if needed) and migrates the database at `path`."""
        path = str(path)
        writer = await _connect(path)
        await _migrate(writer)
        reader = await _connect(path)
        log.info("database %s at schema version %d", path, len(MIGRATIONS))
        return cls(path, writer, reader)

    async def close(self) -> None:
        """Closes both connections after their queued work."""
        async with self._write_lock:
            await self._writer.close()
        await self._reader.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Runs the block in one `BEGIN IMMEDIATE` transaction on the writer, committing on exit."""
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await asyncio.shield(self._writer.rollback())
                raise
            await asyncio.shield(self._writer.commit())

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """Reads committed rows through the reader connection."""
        return list(await self._reader.execute_fetchall(sql, tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """Reads the first committed row, or None."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


async def _connect(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=5000")
    return conn


async def _migrate(conn: aiosqlite.Connection) -> None:
    row = await (await conn.execute("PRAGMA user_version")).fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {version} is newer than this server ({len(MIGRATIONS)})"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version = {number}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()
        log.info("applied schema migration %d", number)


def _statements(script: str) -> list[str]:
    """Splits a migration script into statements (no semicolons inside our DDL literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
