"""PostgreSQL rows: the shared row conversions, positional parameters, the metadata filter."""

from __future__ import annotations

from typing import Any

from turnstile_server.errors import InvalidArgument
from turnstile_server.store.row_records import (
    RUN_COLUMNS,
    Row,
    assistant_from_row,
    checkpoint_from_row,
    dumps,
    loads,
    run_from_row,
    thread_from_row,
)

__all__ = [
    "RUN_COLUMNS",
    "SELECT_RUNS",
    "Params",
    "Row",
    "assistant_from_row",
    "checkpoint_from_row",
    "dumps",
    "loads",
    "metadata_filter",
    "run_from_row",
    "thread_from_row",
]

SELECT_RUNS = f"SELECT {RUN_COLUMNS} FROM runs r"


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
