"""Reading LangGraph checkpoints on PostgreSQL: a checkpoint row with its writes and its blob
chains.

A checkpoint's blobs are read with one query per link of its longest chain (one for channels
that are no grown list), not one per channel and link: one round trip, not one per channel.
"""

from __future__ import annotations

from turnstile_server.store.langgraph_checkpoints import Chain, StoredCheckpoint, WriteRecord
from turnstile_server.store.langgraph_rows import (
    BlobKey,
    checkpoint_frame,
    follow_links,
    wanted_versions,
)
from turnstile_server.store.postgres.database import Conn
from turnstile_server.store.postgres.rows import Row

__all__ = ["BlobKey", "blob_rows", "stored_checkpoint"]


async def stored_checkpoint(
    conn: Conn, row: Row, known: dict[str, str], fetched: set[BlobKey]
) -> StoredCheckpoint:
    """The checkpoint of `row` with its writes and the chains of the channels whose version
    is neither `known` nor `fetched` (by this read already)."""
    frame = checkpoint_frame(row)
    thread, ns = frame.thread_id, frame.checkpoint_ns
    writes = [
        WriteRecord(
            w["task_id"], w["idx"], w["channel"], w["type"], bytes(w["data"]), w["task_path"]
        )
        for w in await conn.fetch(
            "SELECT task_id, idx, channel, type, data, task_path FROM lg_writes"
            " WHERE thread_id = $1 AND checkpoint_ns = $2 AND checkpoint_id = $3"
            " ORDER BY task_path, task_id, idx",
            thread,
            ns,
            frame.checkpoint_id,
        )
    ]
    wanted = wanted_versions(frame, known, fetched)
    return StoredCheckpoint(frame, writes, await _chains(conn, thread, ns, wanted, known, fetched))


async def _chains(
    conn: Conn,
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
        found = {
            (row["channel"], row["version"]): row
            for row in await blob_rows(conn, thread, ns, list(current.items()), data=True)
        }
        current = follow_links(thread, ns, current, found, chains, known, fetched)
    return chains


async def blob_rows(
    conn: Conn,
    thread: str,
    ns: str,
    pairs: list[tuple[str, str | None]],
    *,
    data: bool = False,
) -> list[Row]:
    """The blobs of a thread's namespace at the given (channel, version) pairs, in one query."""
    columns = "b.channel, b.version" + (", b.kind, b.type, b.data, b.base" if data else "")
    return list(
        await conn.fetch(
            f"SELECT {columns} FROM unnest($3::text[], $4::text[]) AS wanted(channel, version)"
            " JOIN lg_blobs b ON b.thread_id = $1 AND b.checkpoint_ns = $2"
            " AND b.channel = wanted.channel AND b.version = wanted.version",
            thread,
            ns,
            [channel for channel, _ in pairs],
            [version for _, version in pairs],
        )
    )
