"""The run options stored as one column each, named once for every SQL backend.

The LangGraph and human-in-the-loop fields of `RunSpec`/`RunRecord` (SQLite migration 8): a
backend inserts `RUN_OPTION_COLUMNS` with `option_values(spec)` and reads them back with
`option_fields(row)`, so a new option is added here, to the records and to each backend's
migration, and nowhere else. JSON columns are text; booleans are integers (NULL: not given).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from turnstile_server.store.records import RunSpec


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _names(value: tuple[str, ...] | None) -> str | None:
    return None if value is None else _json(list(value))


def _from_names(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _from_flag(value: int | None) -> bool | None:
    return None if value is None else bool(value)


class _Row(Protocol):
    """A database row read by column name (sqlite3.Row, a dict)."""

    def __getitem__(self, key: str, /) -> Any: ...


_Column = tuple[str, Callable[[Any], Any], Callable[[Any], Any]]

_OPTIONS: tuple[_Column, ...] = (
    # (field and column name, to the column, from the column)
    ("context", _json, _from_json),
    ("stream_subgraphs", int, bool),
    ("command", _json, _from_json),
    ("interrupt_before", _names, _from_names),
    ("interrupt_after", _names, _from_names),
    ("checkpoint_id", lambda v: v, lambda v: v),
    ("close_tool_calls", _flag, _from_flag),
    ("on_pending_interrupt", str, str),
)

RUN_OPTION_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _OPTIONS)
"""The option columns of `runs`, in the order `option_values` gives them."""

RUN_OUTPUT_COLUMNS: tuple[str, ...] = ("discarded_interrupts",)
"""Columns of `runs` the server fills (JSON list of interrupt ids, `[]` by default)."""


def option_values(spec: RunSpec) -> tuple[Any, ...]:
    """The spec's options as column values, in `RUN_OPTION_COLUMNS` order."""
    return tuple(encode(getattr(spec, name)) for name, encode, _ in _OPTIONS)


def option_fields(row: _Row) -> dict[str, Any]:
    """The record fields of a row holding the option and output columns."""
    fields = {name: decode(row[name]) for name, _, decode in _OPTIONS}
    fields["discarded_interrupts"] = tuple(json.loads(row["discarded_interrupts"] or "[]"))
    return fields


def spec_fields(spec: RunSpec) -> dict[str, Any]:
    """The spec's options as record fields (a run admitted now, before it is read back)."""
    return {name: getattr(spec, name) for name, _, _ in _OPTIONS}
