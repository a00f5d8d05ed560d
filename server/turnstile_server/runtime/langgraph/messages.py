"""LangChain messages and LangGraph's values as JSON, the way LangGraph Platform sends them.

langgraph-api encodes with orjson and a `default` hook: pydantic models (LangChain messages
among them) by `model_dump()` (`type`, `content`, `id`, `tool_calls`, `additional_kwargs`,
...), `Send` as `{node, args}`, named tuples by `_asdict()`, dataclasses (`Interrupt`) field by
field, exceptions as `{error, message}`, sets as lists, NaN and the infinities as `null` (as
orjson writes them), and so on. `to_json` gives the same plain values, for the event hub and
the thread-state API.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import math
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

_SCALARS = (str, int, float, bool, type(None))


def to_json(obj: Any) -> Any:
    """obj as JSON values (dicts with string keys, lists, scalars)."""
    if isinstance(obj, _SCALARS):
        if isinstance(obj, float) and not math.isfinite(obj):
            return None  # JSON has no NaN: a graph may hold one, its thread stays readable
        return obj
    if isinstance(obj, Mapping):
        return {_key(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_asdict"):
        return [to_json(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return to_json(obj.value)
    if _is_send(obj):
        return {"node": obj.node, "args": to_json(obj.arg)}
    for method in ("model_dump", "dict", "_asdict"):
        dump = getattr(obj, method, None)
        if callable(dump) and not isinstance(obj, type):
            return to_json(dump())
    if isinstance(obj, BaseException):
        return {"error": type(obj).__name__, "message": str(obj)}
    if isinstance(obj, (set, frozenset, deque)):
        return [to_json(v) for v in obj]
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, datetime.timedelta):
        return obj.total_seconds()
    if isinstance(obj, decimal.Decimal):
        if not obj.is_finite():
            return None
        return float(obj) if obj.as_tuple().exponent < 0 else int(obj)  # type: ignore[operator]
    if isinstance(obj, (uuid.UUID, PurePath)):
        return str(obj)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", "replace")
    return str(obj)


def _key(key: Any) -> str:
    return key if isinstance(key, str) else str(to_json(key))


def _is_send(obj: Any) -> bool:
    return type(obj).__name__ == "Send" and hasattr(obj, "node") and hasattr(obj, "arg")
