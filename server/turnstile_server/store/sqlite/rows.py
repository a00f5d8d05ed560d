"""Conversions between SQLite rows and records (shared with PostgreSQL), and the metadata filter."""

from __future__ import annotations

from typing import Any

from turnstile_server.store.row_records import (
    RUN_COLUMNS,
    assistant_from_row,
    checkpoint_from_row,
    dumps,
    loads,
    run_from_row,
    thread_from_row,
)

__all__ = [
    "RUN_COLUMNS",
    "assistant_from_row",
    "checkpoint_from_row",
    "dumps",
    "loads",
    "metadata_filter",
    "run_from_row",
    "thread_from_row",
]


def metadata_filter(column: str, metadata: dict[str, Any]) -> tuple[str, list[Any]]:
    """Returns SQL conditions (ANDed) and parameters matching every key of `metadata`."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in metadata.items():
        # By the decoded key, not a JSON path: a path compares the key as stored, escapes
        # included, so a key with a newline or a quote matched nothing (or was refused), and
        # one with NUL was an SQL error. A null matches a missing key too.
        entry = f"SELECT 1 FROM json_each({column}) AS entry WHERE entry.key = ?"
        if value is None:
            clauses.append(f"NOT EXISTS ({entry} AND entry.value IS NOT NULL)")
            params.append(key)
        else:
            clauses.append(f"EXISTS ({entry} AND entry.value IS json_extract(?, '$'))")
            params.extend([key, dumps(value)])
    return " AND ".join(clauses) or "1", params
