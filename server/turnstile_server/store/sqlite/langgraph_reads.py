"""Reading LangGraph checkpoints on SQLite: a checkpoint row with its writes and its blob chains.

A checkpoint's blobs are read with one query per link of its longest chain (one for channels
that are no grown list), not one per channel and link.
"""

from __future__ import annotations

from turnstile_server.store.langgraph_checkpoints import Chain, StoredCheckpoint, WriteRecord
from turnstile_server.store.langgraph_rows import (
    BlobKey,
    checkpoint_frame,
    follow_links,
    wanted_versions,
)
from turnstile_server.store.sqlite.database import Row, Session

__all__ = ["BlobKey", "blob_rows", "stored_checkpoint"]


def stored_checkpoint(
    s: Session, row: Row, known: dict[str, str], fetched: set[BlobKey]
) -> StoredCheckpoint:
    """The checkpoint of `row` with its writes and the chains of the channels whose version
    is neither `known` nor `fetched` (by this read already)."""
    frame = checkpoint_frame(row)
    thread, ns = frame.thread_id, frame.checkpoint_ns
    writes = [
        WriteRecord(w["task_id"], w["idx"], w["channel"], w["type"], w["data"], w["task_path"])
        for w in s.all(
            "SELECT task_id, idx, channel, type, data, task_path FROM lg_writes"
            " WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?"
            " ORDER BY task_path, task_id, idx",
            (thread, ns, frame.checkpoint_id),
        )
    ]
    wanted = wanted_versions(frame, known, fetched)
    return StoredCheckpoint(frame, writes, _chains(s, thread, ns, wanted, known, fetched))


def _chains(
    s: Session,
    thread: str,
    ns: str,
    wanted: dict[str, str],
    known: dict[str, str],
    fetched: set[BlobKey],
) -> dict[str, Chain]:
    """Each wanted channel's blobs from its version back to a whole value, or to a version the
    caller holds or this read fetched already: one query per link of the longest chain (one
    for channels that are no grown list), not one per channel and link."""
    chains: dict[str, Chain] = {channel: [] for channel in wanted}
    current = dict(wanted)
    while current:
        rows = blob_rows(
            s,
            thread,
            ns,
            list(current.items()),
            "b.channel, b.version, b.kind, b.type, b.data, b.base",
        )
        found = {(row["channel"], row["version"]): row for row in rows}
        current = follow_links(thread, ns, current, found, chains, known, fetched)
    return chains


_PAIRS_PER_QUERY = 400
"""(channel, version) pairs per blob query (SQLite binds at most 32,766 values)."""


def blob_rows(
    s: Session, thread: str, ns: str, pairs: list[tuple[str, str | None]], columns: str
) -> list[Row]:
    """The blobs of a thread's namespace at the given (channel, version) pairs: a join on the
    pairs, so each is one search of the blobs' key (a row-value `IN` searches the namespace's
    blobs by its prefix only)."""
    rows: list[Row] = []
    for start in range(0, len(pairs), _PAIRS_PER_QUERY):
        chunk = pairs[start : start + _PAIRS_PER_QUERY]
        rows.extend(
            s.all(
                f"SELECT {columns} FROM (VALUES "
                + ", ".join(["(?, ?)"] * len(chunk))
                + ") AS wanted CROSS JOIN lg_blobs b ON b.thread_id = ? AND b.checkpoint_ns = ?"
                " AND b.channel = wanted.column1 AND b.version = wanted.column2",
                [*(value for pair in chunk for value in pair), thread, ns],
            )
        )
    return rows
