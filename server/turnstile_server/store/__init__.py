"""Persistence behind one interface: threads, runs, checkpoints and assistants.

`Store` (in `interface.py`) is what the server uses; `open_store(url)` opens the backend a
database URL names (SQLite, in `sqlite/`); the records are plain dataclasses.
"""

from turnstile_server.store.interface import (
    AssistantStore,
    AttemptFenced,
    CheckpointStore,
    Renewal,
    ReplicaStore,
    RunStore,
    Store,
    ThreadStore,
)
from turnstile_server.store.langgraph_checkpoints import LangGraphCheckpoints
from turnstile_server.store.records import (
    Admission,
    AssistantRecord,
    CheckpointRecord,
    Ended,
    Recovery,
    RunError,
    RunRecord,
    RunSpec,
    Start,
    ThreadRecord,
)
from turnstile_server.store.url import DatabaseUrlError, open_store, parse_database_url

__all__ = [
    "Admission",
    "AssistantRecord",
    "AssistantStore",
    "AttemptFenced",
    "CheckpointRecord",
    "CheckpointStore",
    "DatabaseUrlError",
    "Ended",
    "LangGraphCheckpoints",
    "Recovery",
    "Renewal",
    "ReplicaStore",
    "RunError",
    "RunRecord",
    "RunSpec",
    "RunStore",
    "Start",
    "Store",
    "ThreadRecord",
    "ThreadStore",
    "open_store",
    "parse_database_url",
]
