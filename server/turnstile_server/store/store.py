"""The store: the database and its tables, opened and closed together."""

from __future__ import annotations

from pathlib import Path

from turnstile_server.store.assistants import Assistants
from turnstile_server.store.checkpoints import Checkpoints
from turnstile_server.store.database import Database
from turnstile_server.store.langgraph_sqlite import SqliteLangGraphCheckpoints
from turnstile_server.store.runs import Runs
from turnstile_server.store.threads import Threads


class Store:
    """Threads, runs, checkpoints and assistants on one SQLite database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.checkpoints = Checkpoints(db)
        self.threads = Threads(db, self.checkpoints)
        self.runs = Runs(db, self.checkpoints)
        self.assistants = Assistants(db)
        self.langgraph = SqliteLangGraphCheckpoints(db)

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Opens the database at `path` (":memory:" is not supported: two connections share it)."""
        return cls(await Database.open(path))

    async def close(self) -> None:
        """Closes the database."""
        await self.db.close()
