"""The SQLite store: the database and its tables, opened and closed together."""

from __future__ import annotations

from pathlib import Path

from turnstile_server.store.sqlite.assistants import Assistants
from turnstile_server.store.sqlite.checkpoints import Checkpoints
from turnstile_server.store.sqlite.database import Database
from turnstile_server.store.sqlite.langgraph import SqliteLangGraphCheckpoints
from turnstile_server.store.sqlite.runs import Runs
from turnstile_server.store.sqlite.threads import Threads


class SqliteStore:
    """The `Store` on one SQLite file: threads, runs, checkpoints and assistants.

    One server process per file: the folded-state cache trusts that every checkpoint is
    written through this store, so opening a file another store has open (in any process)
    raises DatabaseInUse (see `lock.py`).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.checkpoints = Checkpoints(db)
        self.threads = Threads(db, self.checkpoints)
        self.runs = Runs(db, self.checkpoints)
        self.assistants = Assistants(db)
        self.langgraph = SqliteLangGraphCheckpoints(db)
        self.replicas = None  # one server process per file: no leases

    @classmethod
    async def open(cls, path: str | Path) -> SqliteStore:
        """Opens the database at `path` (":memory:" is not supported: two connections share it)."""
        return cls(await Database.open(path))

    async def close(self) -> None:
        """Closes the database."""
        await self.db.close()
