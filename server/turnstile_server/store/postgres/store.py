"""The PostgreSQL store: a pool on one database and its tables, opened and closed together."""

from __future__ import annotations

from turnstile_server.store.postgres.assistants import Assistants
from turnstile_server.store.postgres.checkpoints import Checkpoints
from turnstile_server.store.postgres.database import Database
from turnstile_server.store.postgres.langgraph import PostgresLangGraphCheckpoints
from turnstile_server.store.postgres.leases import PostgresReplicas
from turnstile_server.store.postgres.replica_runs import ReplicaRuns
from turnstile_server.store.postgres.threads import Threads


class PostgresStore:
    """The `Store` on a PostgreSQL database: threads, runs, checkpoints and assistants.

    Any number of stores, in any number of processes, may open one database: every write
    that changes a thread's runs or checkpoints holds the thread's row lock, and the state
    cache checks the database on every read (`checkpoints.py`).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.checkpoints = Checkpoints(db)
        self.threads = Threads(db)
        self.replicas = PostgresReplicas(db)
        self.runs = ReplicaRuns(db, self.replicas)
        self.assistants = Assistants(db)
        self.langgraph = PostgresLangGraphCheckpoints(db)

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connects to the database at `url`, applying the migrations it lacks."""
        return cls(await Database.open(url))

    async def close(self) -> None:
        """Closes the pool once the writes submitted so far have ended."""
        await self.replicas.unlisten()
        await self.db.close()
