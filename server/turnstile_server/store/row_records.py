"""Rows and records, the same for every SQL backend: the run columns, JSON columns, row -> record.

A row is anything that gives its columns by name (`sqlite3.Row`, `asyncpg.Record`).
"""

from __future__ import annotations

import json
from typing import Any

from turnstile_server.store.records import (
    AssistantRecord,
    CheckpointRecord,
    RunError,
    RunRecord,
    RunSpec,
    ThreadRecord,
    options_of,
)
from turnstile_server.store.run_columns import (
    RUN_OPTION_COLUMNS,
    RUN_OUTPUT_COLUMNS,
    option_fields,
    option_values,
)

Row = Any
"""A result row: columns by name."""

RUN_COLUMNS = f"""
    r.seq, r.run_id, r.thread_id, r.assistant_id, r.graph_id, r.status, r.multitask_strategy,
    r.input, r.config, r.metadata, r.stream_mode, r.create_time, r.start_time, r.end_time,
    r.not_before, r.attempt, r.error_type, r.error_message, r.cancel_action, r.cancel_reason,
    r.superseded_by, {", ".join(f"r.{c}" for c in (*RUN_OPTION_COLUMNS, *RUN_OUTPUT_COLUMNS))},
    CASE WHEN r.status = 'pending' THEN (
        SELECT COUNT(*) FROM runs q
        WHERE q.thread_id = r.thread_id AND q.status IN ('pending', 'running') AND q.seq < r.seq
    ) END AS queue_position
"""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# One encoder for every column: `json.dumps` with arguments builds a new one per call.


def dumps(value: Any) -> str:
    """Encodes a JSON column compactly."""
    return _ENCODER.encode(value)


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
        **option_fields(row),
    )


RUN_INSERT_COLUMNS = (
    "run_id, thread_id, assistant_id, graph_id, status, multitask_strategy, input, config,"
    " metadata, stream_mode, create_time, not_before, request_id, attempt, start_time,"
    f" {', '.join(RUN_OPTION_COLUMNS)}, discarded_interrupts"
)
"""The columns of `runs` an admission inserts, in the order `admitted_values` gives them."""


def admitted_values(
    spec: RunSpec,
    run_id: str,
    now: int,
    run_input: str | None,
    starting: bool,
    discarded: tuple[str, ...],
) -> tuple[Any, ...]:
    """The `RUN_INSERT_COLUMNS` of a run admitted now: PENDING, or RUNNING on its first
    attempt when it is `starting` in its admission; `run_input` is its input encoded."""
    return (
        run_id,
        spec.thread_id,
        spec.assistant_id,
        spec.graph_id,
        "running" if starting else "pending",
        spec.multitask_strategy,
        run_input,
        dumps(spec.config),
        dumps(spec.metadata),
        dumps(spec.stream_mode),
        now,
        now + int(spec.after_seconds * 1_000_000),
        spec.request_id or None,
        1 if starting else 0,
        now if starting else None,
        *option_values(spec),
        dumps(list(discarded)),
    )


def admitted_run(
    spec: RunSpec,
    run_id: str,
    now: int,
    run_input: str | None,
    seq: int,
    ahead: int | None,
    discarded: tuple[str, ...],
) -> RunRecord:
    """The run as admitted (PENDING, `ahead` runs before it), built from what was inserted
    (`admitted_values`) rather than read back."""
    return RunRecord(
        run_id=run_id,
        thread_id=spec.thread_id,
        assistant_id=spec.assistant_id,
        graph_id=spec.graph_id,
        status="pending",
        multitask_strategy=spec.multitask_strategy,
        input=loads(run_input),
        config=spec.config,
        metadata=spec.metadata,
        stream_mode=spec.stream_mode,
        create_time=now,
        start_time=None,
        end_time=None,
        not_before=now + int(spec.after_seconds * 1_000_000),
        attempt=0,
        error=None,
        cancel_action=None,
        cancel_reason="",
        superseded_by="",
        seq=seq,
        queue_position=ahead,
        **options_of(spec),
        discarded_interrupts=discarded,
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
