"""The backends under test and the helpers the contract's tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import postgres
from turnstile_server.store import RunRecord, RunSpec, Store, open_store

BACKENDS = ["sqlite", "postgresql"]
MAX_QUEUED = 3


@dataclass
class Backend:
    """A storage backend under test: where its database is, and how to open a store on it.

    `one_process`: the backend serves one server process per database (SQLite, whose state
    cache trusts that every write goes through it) and must refuse a second one.
    """

    name: str
    url: str
    one_process: bool

    async def open(self) -> Store:
        return await open_store(self.url)


@asynccontextmanager
async def backend_for(name: str, directory: Path) -> AsyncIterator[Backend]:
    """The backend `name` on a fresh database (in `directory`, for SQLite), removed after."""
    if name == "sqlite":
        yield Backend(name, f"sqlite:///{directory / 'contract.db'}", one_process=True)
        return
    assert name == "postgresql", f"unknown backend {name}"
    async with postgres.database() as url:
        yield Backend(name, url, one_process=False)


def spec(thread_id: str, strategy: str = "enqueue", **fields: Any) -> RunSpec:
    values: dict[str, Any] = {
        "thread_id": thread_id,
        "assistant_id": "agent",
        "graph_id": "agent",
        "input": {"messages": [{"type": "human", "content": "hi", "id": "m1"}]},
        "multitask_strategy": strategy,
        "config": {},
        "metadata": {},
        "stream_mode": ["values"],
        **fields,
    }
    return RunSpec(**values)


async def started(store: Store, thread_id: str, strategy: str = "enqueue") -> RunRecord:
    """A run admitted and started at once on an idle thread: RUNNING, its input written."""
    admission = await store.runs.admit(spec(thread_id, strategy), max_queued=MAX_QUEUED, start=True)
    assert admission.start is not None and admission.start.run is not None
    assert admission.start.input is not None
    return admission.start.run


async def statuses(store: Store, thread_id: str) -> dict[str, str]:
    runs, _ = await store.runs.list(thread_id, status=None, limit=100, before=None)
    return {run.run_id: run.status for run in runs}
