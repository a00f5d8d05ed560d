"""The SQLite backend: one file in WAL mode, one server process per file (`lock.py`)."""

from turnstile_server.store.sqlite.database import Database
from turnstile_server.store.sqlite.lock import DatabaseInUse
from turnstile_server.store.sqlite.store import SqliteStore

__all__ = ["Database", "DatabaseInUse", "SqliteStore"]
