"""What a running graph knows about its run, and its channel for streamed events."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class RunContext:
    """What a running graph knows about its run, and its channel for streamed events."""

    __slots__ = ("_emit", "attempt", "config", "input", "run_id", "thread_id")

    def __init__(
        self,
        *,
        run_id: str,
        thread_id: str,
        emit: Callable[[str, Any], None],
        attempt: int = 1,
        input: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self.attempt = attempt
        self.input: dict[str, Any] = dict(input or {})
        self.config: dict[str, Any] = dict(config or {})
        self._emit = emit

    def __repr__(self) -> str:
        return (
            f"RunContext(run_id={self.run_id!r}, thread_id={self.thread_id!r}, "
            f"attempt={self.attempt})"
        )

    def configurable(self, key: str, default: Any = None) -> Any:
        """Return `config["configurable"][key]`, or default when it is not set."""
        configurable = self.config.get("configurable")
        if not isinstance(configurable, Mapping):
            return default
        return configurable.get(key, default)

    def emit_message_chunk(self, chunk: dict[str, Any]) -> None:
        """Stream a message chunk (a `messages` event) without waiting."""
        self._emit("messages", chunk)

    def emit_custom(self, data: Any) -> None:
        """Stream a graph-defined `custom` event without waiting."""
        self._emit("custom", data)
