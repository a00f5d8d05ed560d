"""What both backends do with LangGraph's rows once read: a checkpoint's frame from its row,
the channel versions a read still needs, and one link of each blob chain.

Pure: the backends run their own queries (`sqlite/langgraph_reads.py`,
`postgres/langgraph_reads.py`) and hand the rows here, so the chain rules are written once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from turnstile_server.store.langgraph_checkpoints import (
    BlobRecord,
    Chain,
    CheckpointFrame,
    WriteRecord,
)

BlobKey = tuple[str, str, str, str]
"""(thread, namespace, channel, version) of a blob."""

Key = tuple[str, str, str]
"""(namespace, channel, version) of a blob within a thread; also (thread, namespace,
checkpoint) of a checkpoint's writes."""

FRAME_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_id, run_id, type, frame, versions, metadata"
)
"""The columns of `lg_checkpoints`, in the order of `frame_values`."""


class BrokenChain(LookupError):
    """An `append` blob's base version is not stored: the blob cannot be written."""


def checkpoint_frame(row: Any) -> CheckpointFrame:
    """The frame of an `lg_checkpoints` row (a mapping by column name; `frame` as bytes)."""
    return CheckpointFrame(
        row["thread_id"],
        row["checkpoint_ns"],
        row["checkpoint_id"],
        row["parent_id"],
        row["run_id"],
        row["type"],
        bytes(row["frame"]),
        json.loads(row["versions"]),
        json.loads(row["metadata"]),
    )


def frame_values(frame: CheckpointFrame) -> tuple[Any, ...]:
    """An `lg_checkpoints` row's values, in `FRAME_COLUMNS`' order."""
    return (
        frame.thread_id,
        frame.checkpoint_ns,
        frame.checkpoint_id,
        frame.parent_id,
        frame.run_id,
        frame.type,
        frame.frame,
        json.dumps(dict(frame.versions)),
        json.dumps(dict(frame.metadata), default=repr),
    )


def blob_values(frame: CheckpointFrame, blob: BlobRecord) -> tuple[Any, ...]:
    """An `lg_blobs` row's values: thread_id, checkpoint_ns, channel, version, run_id, kind,
    base, type, data."""
    return (
        frame.thread_id,
        frame.checkpoint_ns,
        blob.channel,
        blob.version,
        frame.run_id,
        blob.kind,
        blob.base,
        blob.type,
        blob.data,
    )


def write_values(key: Key, run_id: str, write: WriteRecord) -> tuple[Any, ...]:
    """An `lg_writes` row's values: thread_id, checkpoint_ns, checkpoint_id, task_id, idx,
    run_id, channel, type, data, task_path."""
    return (
        *key,
        write.task_id,
        write.idx,
        run_id,
        write.channel,
        write.type,
        write.data,
        write.task_path,
    )


def unread_blobs(
    blobs: Iterable[Sequence[Any]],
    checkpoints: Iterable[Sequence[Any]],
    runs: set[str] | None,
) -> list[Key]:
    """Of a thread's blobs (namespace, channel, version, base, run_id), those of `runs` (or
    any) that none of its checkpoints (namespace, versions as JSON) reads, directly or as the
    base of a blob it reads."""
    listed = list(blobs)
    bases: dict[Key, str | None] = {(b[0], b[1], b[2]): b[3] for b in listed}
    read: set[Key] = set()
    for ns, versions in checkpoints:
        for channel, version in json.loads(versions).items():
            key: Key | None = (ns, channel, version)
            while key is not None and key in bases and key not in read:
                read.add(key)
                base = bases[key]
                key = None if base is None else (ns, channel, base)
    return [
        (ns, channel, version)
        for ns, channel, version, _, run_id in listed
        if (ns, channel, version) not in read and (runs is None or run_id in runs)
    ]


def wanted_versions(
    frame: CheckpointFrame, known: Mapping[str, str], fetched: set[BlobKey]
) -> dict[str, str]:
    """The frame's channel versions that the caller does not hold and this read has not
    fetched yet."""
    thread, ns = frame.thread_id, frame.checkpoint_ns
    return {
        channel: version
        for channel, version in frame.versions.items()
        if known.get(channel) != version and (thread, ns, channel, version) not in fetched
    }


def follow_links(
    thread: str,
    ns: str,
    current: Mapping[str, str],
    found: Mapping[tuple[str, str], Any],
    chains: dict[str, Chain],
    known: Mapping[str, str],
    fetched: set[BlobKey],
) -> dict[str, str]:
    """Appends the blob found for each channel's `current` version to its chain and answers
    the versions to read next: the bases of `append` blobs that neither the caller holds nor
    this read fetched."""
    following: dict[str, str] = {}
    for channel, version in current.items():
        row = found.get((channel, version))
        if row is None:
            continue
        chains[channel].append(
            BlobRecord(channel, version, row["kind"], row["type"], bytes(row["data"]), row["base"])
        )
        fetched.add((thread, ns, channel, version))
        base = row["base"] if row["kind"] == "append" else None
        if base is not None and not (
            known.get(channel) == base or (thread, ns, channel, base) in fetched
        ):
            following[channel] = base
    return following
