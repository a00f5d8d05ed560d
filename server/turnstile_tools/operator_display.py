"""How the operator commands show threads, runs and events to people: tables, records, lines."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

MAX_CELL: Final = 60
"""Characters of metadata shown in a table cell."""
MAX_TEXT: Final = 160
"""Characters of a message or event summary shown on one line."""


def state_text(state: Mapping[str, Any]) -> str:
    """The latest checkpoint as lines: its id, run and step, the messages, the other keys."""
    checkpoint = state["checkpoint_id"]
    fields = [
        ("thread_id", state["thread_id"]),
        ("checkpoint", checkpoint or "- (no checkpoint yet)"),
    ]
    if checkpoint:
        fields += [
            ("run_id", value_text(state["run_id"])),
            ("step", f"{state['step']} ({state['source']})"),
            ("created", when(state["create_time"])),
        ]
    values = dict(state["values"])
    messages = values.pop("messages", None)
    parts = [record(fields)]
    if isinstance(messages, list):
        rows = [(str(i), *_message_cells(m)) for i, m in enumerate(messages, 1)]
        parts.append(f"messages ({len(rows)})\n" + table(("#", "TYPE", "CONTENT"), rows))
    if values:
        parts.append("values\n" + record([(k, compact(v)) for k, v in values.items()]))
    return "\n\n".join(parts)


def run_record(run: Mapping[str, Any]) -> str:
    """Every field of a run, one per line."""
    error = run["error"]
    return record(
        [
            ("run_id", run["run_id"]),
            ("thread_id", run["thread_id"]),
            ("assistant_id", run["assistant_id"]),
            ("status", run["status"]),
            ("strategy", run["multitask_strategy"]),
            ("attempt", str(run["attempt"])),
            ("queue_position", value_text(run["queue_position"])),
            ("created", when(run["create_time"])),
            ("started", when(run["start_time"])),
            ("ended", when(run["end_time"])),
            ("timeout_seconds", value_text(run["timeout_seconds"])),
            ("durability", run["durability"]),
            ("error", f"{error['type']}: {error['message']}" if error else "-"),
            ("cancel_reason", value_text(run["cancel_reason"])),
            ("superseded_by", value_text(run["superseded_by"])),
            ("metadata", compact(run["metadata"])),
        ]
    )


def event_summary(event: str, data: Any) -> str:
    """One line saying what an event of a run's (or a thread's) stream carries."""
    if not isinstance(data, dict):
        return compact(data, MAX_TEXT)
    if event == "metadata":
        return f"run {data.get('run_id')} attempt {value_text(data.get('attempt'))}"
    if event == "end":
        text = str(data.get("status", ""))
        for key in ("action", "superseded_by", "reason"):
            if data.get(key):
                text += f" {key}={data[key]}"
        return text
    if event == "error":
        return _clip(f"{data.get('type')}: {data.get('message')}")
    if event in ("run_started", "run_ended"):
        return f"run {data.get('run_id')} {data.get('status')} ({data.get('multitask_strategy')})"
    if event == "messages" and "type" in data:
        chunk = data.get("content")
        shown = json.dumps(chunk, ensure_ascii=False) if isinstance(chunk, str) else compact(chunk)
        return _clip(f"{data['type']} chunk {shown}")
    if event == "values":
        return values_summary(data)
    if event == "updates" and isinstance(data.get("messages"), list):
        rest = {k: v for k, v in data.items() if k != "messages"}
        added = [f"{kind}: {content}" for kind, content in map(_message_cells, data["messages"])]
        return _clip("; ".join([*added, *(f"{k}={compact(v)}" for k, v in rest.items())]))
    return compact(data, MAX_TEXT)


def values_summary(values: Mapping[str, Any]) -> str:
    """A thread's values in one line: how many messages, the last one, the other keys."""
    messages = values.get("messages")
    others = sorted(k for k in values if k != "messages")
    parts = []
    if isinstance(messages, list):
        last = f"; last {': '.join(_message_cells(messages[-1]))}" if messages else ""
        plural = "" if len(messages) == 1 else "s"
        parts.append(f"{len(messages)} message{plural}{last}")
    if others:
        parts.append("keys " + ", ".join(others))
    return _clip("; ".join(parts)) if parts else "{}"


def _message_cells(message: Any) -> tuple[str, str]:
    """A message as (type, one line of content)."""
    if not isinstance(message, dict):
        return "?", compact(message, MAX_TEXT)
    kind = str(message.get("type", "?"))
    if message.get("name") and kind == "tool":
        kind = f"tool ({message['name']})"
    text = _content(message.get("content"))
    calls = message.get("tool_calls") or []
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            text += f" [calls {call.get('name')}({compact(call.get('args', {}))})]"
    return kind, _clip(text.strip())


def _content(content: Any) -> str:
    if isinstance(content, str):
        return " ".join(content.split())
    if isinstance(content, list):
        texts = [b.get("text", "") if isinstance(b, dict) else compact(b) for b in content]
        return " ".join(" ".join(texts).split())
    return "" if content is None else compact(content)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Aligned columns under their headers."""
    lines = [list(headers), *map(list, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def record(fields: Sequence[tuple[str, str]]) -> str:
    """`name: value` lines, the names aligned."""
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in fields)


def when(iso: str | None) -> str:
    """An SDK timestamp as ISO 8601 UTC to the second, e.g. `2025-01-31T09:30:00Z`."""
    if not iso:
        return "-"
    moment = datetime.datetime.fromisoformat(iso).astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def value_text(value: Any) -> str:
    """A value as table text: `-` for None or empty, whole numbers without `.0`."""
    return "-" if value is None or value == "" else str(_plain(value))


def _plain(value: Any) -> Any:
    """`value` with whole floats as ints: JSON numbers travel as doubles (`3` comes as `3.0`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def compact(value: Any, limit: int | None = None) -> str:
    """JSON on one line (sorted keys, whole numbers without `.0`), clipped to `limit`."""
    text = json.dumps(
        _plain(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str
    )
    return _clip(text, limit or len(text))


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
