"""Read-only views of a run's state: what a native graph is handed instead of the values.

A view reads through to the run's own values, so it shows each update as the run applies it,
and refuses every write: a graph changes its thread only by yielding updates. Wrapping is lazy
(a nested dict or list is wrapped when it is read), so handing a graph its state costs the
same on a thread of 10,000 messages as on an empty one. `copy.deepcopy(view)` gives plain,
mutable data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, overload

_READ_ONLY = "a graph's state is read-only: yield an update to change the thread"


def read_only(value: Any) -> Any:
    """Return value itself when immutable, else a read-only view of the dict or list."""
    if isinstance(value, dict):
        return ReadOnlyMapping(value)
    if isinstance(value, list):
        return ReadOnlySequence(value)
    return value


def plain(value: Any) -> Any:
    """Return a plain, mutable deep copy of JSON-like data (views included)."""
    if isinstance(value, ReadOnlyMapping | ReadOnlySequence):
        value = value._data
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def _refuse(*_: Any, **__: Any) -> NoReturn:
    raise TypeError(_READ_ONLY)


class ReadOnlyMapping(Mapping[str, Any]):
    """A dict seen through a view: reads wrap nested containers, writes raise TypeError."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return read_only(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __eq__(self, other: object) -> bool:
        return self._data == (other._data if isinstance(other, ReadOnlyMapping) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ReadOnlyMapping({self._data!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        copied: dict[str, Any] = plain(self)
        return copied

    # The writes a dict has, refused with a message that says what to do instead.
    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class ReadOnlySequence(Sequence[Any]):
    """A list seen through a view: reads wrap nested containers, writes raise TypeError."""

    __slots__ = ("_data",)

    def __init__(self, data: list[Any]) -> None:
        self._data = data

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> ReadOnlySequence: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ReadOnlySequence(self._data[index])
        return read_only(self._data[index])

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[Any]:
        for item in self._data:
            yield read_only(item)

    def __eq__(self, other: object) -> bool:
        return self._data == (other._data if isinstance(other, ReadOnlySequence) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ReadOnlySequence({self._data!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copied: list[Any] = plain(self)
        return copied

    # The writes a list has, refused with a message that says what to do instead.
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = clear = extend = insert = pop = remove = reverse = sort = _refuse
