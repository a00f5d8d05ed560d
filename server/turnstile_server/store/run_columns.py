"""The run options (`records.RunOptions`) stored as one column each, for every SQL backend.

A backend inserts `RUN_OPTION_COLUMNS` with `option_values(spec)` and reads them back with
`option_fields(row)`; each column is named after its field and encoded after the field's
annotation (`_CODECS`: JSON objects and name lists as text, flags as integers, NULL for not
given). So a new stored run field is added to `RunOptions` and to each backend's migration,
and nowhere here, unless its annotation is a new one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Protocol

from turnstile_server.store.records import RunOptions


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


def _same(value: Any) -> Any:
    return value


_Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]
_Column = tuple[str, Callable[[Any], Any], Callable[[Any], Any]]

_CODECS: dict[str, _Codec] = {
    # a field's annotation: (to the column, from the column)
    "float | None": (_same, _same),
    "str": (_same, _same),
    "str | None": (_same, _same),
    "bool": (int, bool),
    "bool | None": (_flag, _from_flag),
    "dict[str, Any] | None": (_json, _from_json),
    "tuple[str, ...] | None": (_names, _from_names),
}


def _column(name: str, annotation: object) -> _Column:
    """A field's column: its name and its codec, chosen by its annotation."""
    codec = _CODECS.get(str(annotation))
    if codec is None:
        raise TypeError(
            f"RunOptions.{name}: no column encoding for {annotation!r}; add one to _CODECS"
        )
    return name, *codec


_OPTIONS = tuple(_column(f.name, f.type) for f in fields(RunOptions))

RUN_OPTION_COLUMNS: tuple[str, ...] = tuple(name for name, _, _ in _OPTIONS)
"""The option columns of `runs`, in the order `option_values` gives them."""

RUN_OUTPUT_COLUMNS: tuple[str, ...] = ("discarded_interrupts",)
"""Columns of `runs` the server fills (JSON list of interrupt ids, `[]` by default)."""


def option_values(spec: RunOptions) -> tuple[Any, ...]:
    """The spec's options as column values, in `RUN_OPTION_COLUMNS` order."""
    return tuple(encode(getattr(spec, name)) for name, encode, _ in _OPTIONS)


def option_fields(row: _Row) -> dict[str, Any]:
    """The record fields of a row holding the option and output columns."""
    fields = {name: decode(row[name]) for name, _, decode in _OPTIONS}
    fields["discarded_interrupts"] = tuple(json.loads(row["discarded_interrupts"] or "[]"))
    return fields
