"""LangGraph's stream chunks as Turnstile events, named as LangGraph Platform names them.

Each mode is its own event (`values`, `updates`, `custom`, `debug`, `tasks`, `checkpoints`),
`mode|ns1|ns2` for a subgraph's chunk with `stream_subgraphs`. LangGraph's `messages` mode
feeds two of ours: `messages`, one `[chunk, metadata]` per event (LangGraph Platform's
`messages-tuple`), and `messages-partial`, LangGraph Platform's accumulated form: a
`messages/metadata` event per new message id, then `messages/partial` with the message so far
(a streamed chunk) or `messages/complete` (a whole message a node returned).
"""

from __future__ import annotations

from typing import Any

from turnstile_server.runtime.interface import RunHost
from turnstile_server.runtime.langgraph.messages import to_json

DIRECT_MODES = ("values", "updates", "custom", "debug", "tasks", "checkpoints")
"""Our modes that are LangGraph's modes of the same name."""


def langgraph_modes(modes: list[str]) -> list[str]:
    """The LangGraph stream modes a run's modes need (at least one: `astream` needs one)."""
    wanted = [m for m in DIRECT_MODES if m in modes]
    if "messages" in modes or "messages-partial" in modes:
        wanted.append("messages")
    return wanted or ["updates"]


class Streamer:
    """Turns one run's LangGraph chunks into its events, through the host."""

    __slots__ = ("_host", "_partial", "_subgraphs")

    def __init__(self, host: RunHost, *, subgraphs: bool) -> None:
        self._host = host
        self._subgraphs = subgraphs
        self._partial: dict[str, Any] = {}

    def chunk(self, namespace: tuple[str, ...], mode: str, data: Any) -> None:
        """Emits what one chunk of `astream(..., subgraphs=True)` gives the run's modes."""
        if namespace and not self._subgraphs:
            return
        suffix = "".join("|" + part for part in namespace)
        host = self._host
        if mode != "messages":
            if host.wants(mode):
                host.emit(mode + suffix, to_json(self._named(mode, data)), mode=mode)
            return
        if host.wants("messages"):
            host.emit("messages" + suffix, to_json(list(data)), mode="messages")
        if host.wants("messages-partial"):
            self._accumulate(suffix, data)

    def _named(self, mode: str, data: Any) -> Any:
        """A checkpoint's metadata names its run and attempt, as the stored one does (LangGraph
        streams its own metadata, without what the saver adds)."""
        if mode == "checkpoints" and isinstance(data, dict):
            return self._with_run(data)
        if mode == "debug" and isinstance(data, dict) and data.get("type") == "checkpoint":
            return {**data, "payload": self._with_run(data.get("payload") or {})}
        return data

    def _with_run(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        run = self._host.run
        metadata = {"run_id": run.run_id, "run_attempt": run.attempt}
        return {**checkpoint, "metadata": {**metadata, **(checkpoint.get("metadata") or {})}}

    def _accumulate(self, suffix: str, data: Any) -> None:
        from langchain_core.messages import BaseMessageChunk, message_chunk_to_message

        message, metadata = data
        key = str(message.id)
        if key in self._partial and isinstance(message, BaseMessageChunk):
            self._partial[key] = self._partial[key] + message
        else:
            self._partial[key] = message
            self._host.emit(
                "messages/metadata" + suffix,
                {key: {"metadata": to_json(metadata)}},
                mode="messages-partial",
            )
        so_far = self._partial[key]
        self._host.emit(
            ("messages/partial" if isinstance(message, BaseMessageChunk) else "messages/complete")
            + suffix,
            [to_json(message_chunk_to_message(so_far))],
            mode="messages-partial",
        )
