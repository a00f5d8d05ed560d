"""Which storage backend a `--database` value names, and opening a store on it.

`sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (SQLAlchemy's spelling) or a bare
path: SQLite, one server process per file. `postgresql://user@host:port/db` (or
`postgres://`, libpq's spelling, passed to asyncpg as given): PostgreSQL, any number of server
processes per database. Any other scheme is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from turnstile_server.store.interface import Store

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class DatabaseUrlError(ValueError):
    """A `--database` value no backend takes."""


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """A parsed `--database` value: the backend and, for SQLite, the file."""

    backend: str  # "sqlite" or "postgresql"
    path: str = ""  # the SQLite file
    url: str = ""  # as given


def parse_database_url(text: str) -> DatabaseUrl:
    """Parses a `--database` value; DatabaseUrlError for an unknown scheme or no path."""
    match = _SCHEME.match(text)
    if match is None:
        if not text:
            raise DatabaseUrlError("the database is empty: give sqlite:///path/to.db or a path")
        return DatabaseUrl("sqlite", text, text)
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        rest = text[match.end() :]
        if not rest.startswith("/") or rest == "/":
            raise DatabaseUrlError(
                f"{text!r}: a SQLite URL names its file after three slashes:"
                " sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return DatabaseUrl("sqlite", rest[1:], text)
    if scheme in ("postgresql", "postgres"):
        return DatabaseUrl("postgresql", url=text)
    raise DatabaseUrlError(
        f"unknown database scheme {scheme!r} in {text!r}: use sqlite:///path/to.db,"
        " a bare path, or postgresql://user@host:port/db"
    )


async def open_store(url: str) -> Store:
    """Opens (creating and migrating if needed) the store that `url` names."""
    database = parse_database_url(url)
    # Imported here: each backend loads only when it is chosen.
    if database.backend == "postgresql":
        from turnstile_server.store.postgres import PostgresStore

        return await PostgresStore.open(database.url)
    from turnstile_server.store.sqlite import SqliteStore

    return await SqliteStore.open(database.path)


async def migrate_database(url: str) -> int:
    """Applies the schema migrations the database `url` names lacks, without serving; returns
    the schema version it is at now."""
    database = parse_database_url(url)
    store = await open_store(url)
    await store.close()
    if database.backend == "postgresql":
        from turnstile_server.store.postgres.schema import MIGRATIONS
    else:
        from turnstile_server.store.sqlite.schema import MIGRATIONS
    return len(MIGRATIONS)
