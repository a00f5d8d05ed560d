"""Conversions between PostgreSQL rows and records, the JSON columns, the metadata filter."""

from __future__ import annotations

import json
from typing import Any

from turnstile_server.errors import InvalidArgument
from turnstile_server.store.records import (
    AssistantRecord,
    CheckpointRecord,
    RunError,
    RunRecord,
    ThreadRecord,
)
from turnstile_server.store.run_columns import RUN_OPTION_COLUMNS, RUN_OUTPUT_COLUMNS, option_fields

Row = Any
"""An `asyncpg.Record`: columns by name."""

RUN_COLUMNS = f"""
    {", ".join(f"r.{c}" for c in (*RUN_OPTION_COLUMNS, *RUN_OUTPUT_COLUMNS))},
    r.seq, r.run_id, r.thread_id, r.assistant_id, r.graph_id, r.status, r.multitask_strategy,
    r.input, r.config, r.metadata, r.stream_mode, r.create_time, r.start_time, r.end_time,
    r.not_before, r.attempt, r.error_type, r.error_message, r.cancel_action, r.cancel_reason,
    r.superseded_by, r.timeout_seconds, r.durability,
    CASE WHEN r.status = 'pending' THEN (
        SELECT COUNT(*) FROM runs q
        WHERE q.thread_id = r.thread_id AND q.status IN ('pending', 'running') AND q.seq < r.seq
    ) END AS queue_position
"""
SELECT_RUNS = f"SELECT {RUN_COLUMNS} FROM runs r"


def dumps(value: Any) -> str:
    """Encodes a JSON column compactly (as the SQLite backend does)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | None) -> Any:
    """Decodes a JSON column (None stays None)."""
    return None if text is None else json.loads(text)


def run_from_row(row: Row) -> RunRecord:
    """Builds a RunRecord from a row selected with RUN_COLUMNS."""
    error = RunError(row["error_type"], row["error_message"] or "") if row["error_type"] else None
    position = row["queue_position"]
    return RunRecord(
        run_id=row["run_id"],
        thread_id=row["thread_id"],
        assistant_id=row["assistant_id"],
        graph_id=row["graph_id"],
        status=row["status"],
        multitask_strategy=row["multitask_strategy"],
        input=loads(row["input"]),
        config=loads(row["config"]),
        metadata=loads(row["metadata"]),
        stream_mode=loads(row["stream_mode"]),
        create_time=row["create_time"],
        start_time=row["start_time"],
        end_time=row["end_time"],
        not_before=row["not_before"],
        attempt=row["attempt"],
        error=error,
        cancel_action=row["cancel_action"],
        cancel_reason=row["cancel_reason"],
        superseded_by=row["superseded_by"],
        seq=row["seq"],
        queue_position=None if position is None else int(position),
        timeout_seconds=row["timeout_seconds"],
        durability=row["durability"],
        **option_fields(row),
    )


def thread_from_row(row: Row) -> ThreadRecord:
    """Builds a ThreadRecord from a `threads` row."""
    return ThreadRecord(
        thread_id=row["thread_id"],
        metadata=loads(row["metadata"]),
        status=row["status"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        interrupts=loads(row["interrupts"]),
    )


def assistant_from_row(row: Row) -> AssistantRecord:
    """Builds an AssistantRecord from an `assistants` row."""
    return AssistantRecord(
        assistant_id=row["assistant_id"],
        graph_id=row["graph_id"],
        name=row["name"],
        config=loads(row["config"]),
        metadata=loads(row["metadata"]),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def checkpoint_from_row(row: Row) -> CheckpointRecord:
    """Builds a CheckpointRecord from a `checkpoints` row."""
    return CheckpointRecord(
        seq=row["seq"],
        checkpoint_id=row["checkpoint_id"],
        thread_id=row["thread_id"],
        run_id=row["run_id"],
        step=row["step"],
        source=row["source"],
        update=loads(row["update_json"]),
        create_time=row["create_time"],
    )


class Params:
    """Positional parameters of one statement: `add` returns the next `$n` placeholder."""

    def __init__(self, *values: Any) -> None:
        self.values: list[Any] = list(values)

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def metadata_filter(column: str, metadata: dict[str, Any], params: Params) -> str:
    """Returns SQL conditions (ANDed) matching every key of `metadata`, as the SQLite backend
    matches them: by the decoded key; a null matches a missing key too; numbers compare as
    numbers; any other value compares as its JSON text, which is what `dumps` wrote (SQLite
    compares objects and strings by their text too).

    The column is read as `json` (its text as written), compared without `jsonb`; metadata
    holds no `\\u0000` (`filterable` refuses it), which PostgreSQL's JSON operators cannot
    read, so no stored metadata can break another caller's filter."""
    clauses: list[str] = []
    for key, value in metadata.items():
        entry = f"({column}::json -> {params.add(key)})"
        if value is None:
            clauses.append(f"({entry} IS NULL OR json_typeof{entry} = 'null')")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = params.add(float(value))
            clauses.append(
                f"(json_typeof{entry} = 'number' AND ({entry}::text)::float8 = {number})"
            )
        else:
            clauses.append(f"{entry}::text = {params.add(dumps(value))}")
    return " AND ".join(clauses) or "TRUE"


def filterable(metadata: dict[str, Any]) -> str:
    """Encodes metadata that filters will read; InvalidArgument (INVALID_TEXT) if a string in
    it holds NUL, which PostgreSQL's JSON operators refuse (`"\\u0000"`) wherever it is."""
    if _has_nul(metadata):
        raise InvalidArgument(
            "metadata: a string contains the NUL character, which PostgreSQL cannot filter on",
            reason="INVALID_TEXT",
            field="metadata",
        )
    return dumps(metadata)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(item) for item in value)
    return False
