"""Persistence on SQLite: threads, runs, checkpoints and assistants."""

from turnstile_server.store.database import Database
from turnstile_server.store.records import (
    Admission,
    AssistantRecord,
    CheckpointRecord,
    Ended,
    RunError,
    RunRecord,
    RunSpec,
    Start,
    ThreadRecord,
)
from turnstile_server.store.store import Store

__all__ = [
    "Admission",
    "AssistantRecord",
    "CheckpointRecord",
    "Database",
    "Ended",
    "RunError",
    "RunRecord",
    "RunSpec",
    "Start",
    "Store",
    "ThreadRecord",
]
