"""LangGraph's checkpointer on Turnstile's store: checkpoints, blobs and writes in our database.

Writing a step costs what the step changed: a list channel that only grew is stored as its new
items (see `blobs`), and loading the latest checkpoint of a thread this process wrote or read
takes the list from the channel cache instead of decoding every message again.

What a graph writes is held to the depth a client may send (`MAX_JSON_DEPTH`), as the native
runtime holds its updates: a task's write or a checkpoint's channel nested deeper is refused
before it is encoded, and so is everything the saver is given after (`refused`), so neither
the write nor the checkpoint of that step lands and the run ends with that reason. So is a
root checkpoint whose channels would take more than `max_state_bytes` stored, or a task's writes
alone: a thread's size is the sum of its channels' blobs, which the saver knows from what it
loaded and encoded (a grown list's blob holds its new items), so measuring costs nothing more.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from turnstile_server.errors import InvalidInput, StateTooLarge, TurnstileError
from turnstile_server.runtime.langgraph.blobs import MISSING, ChannelCache, Folder, encode
from turnstile_server.runtime.langgraph.last_put import LastPut
from turnstile_server.state import MAX_JSON_DEPTH, nests_deeper
from turnstile_server.store.langgraph_checkpoints import (
    BlobRecord,
    CheckpointFrame,
    LangGraphCheckpoints,
    StoredCheckpoint,
    WriteRecord,
)


class TurnstileSaver(BaseCheckpointSaver[str]):
    """A `BaseCheckpointSaver` over the storage interface's `LangGraphCheckpoints` (async only).

    Every checkpoint's metadata names the run that wrote it: `run_id` from the config's
    `configurable` (LangGraph copies it in) or, failing that, from its `metadata`.
    """

    def __init__(
        self,
        store: LangGraphCheckpoints,
        *,
        serde: SerializerProtocol | None = None,
        cache: ChannelCache | None = None,
        on_root_put: Callable[[CheckpointMetadata], None] | None = None,
        max_state_bytes: int | None = None,
    ) -> None:
        """`on_root_put` is called with its metadata once a root namespace checkpoint landed;
        `max_state_bytes` refuses a root checkpoint whose channels would take more stored."""
        super().__init__(serde=serde)
        self._store = store
        self._cache = cache if cache is not None else ChannelCache()
        self._on_root_put = on_root_put
        self._limit = max_state_bytes
        # With a limit: the stored bytes of each channel of the root checkpoint loaded or put
        # last (a run's saver serves one thread).
        self._sizes: dict[str, int] = {}
        self.refused: TurnstileError | None = None
        """The write too deep this saver refused: it refuses every later put as well (what
        comes after builds on it), and the run ends with it whatever LangGraph raised."""
        self.last_put = LastPut()
        """The root checkpoint this saver put last, and the writes put against it."""
        self.serve_last = False
        """Set by a run's runtime once its graph has returned: reads of the thread's latest
        root checkpoint are then answered from `last_put` (see `last_put`)."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint `config` names, or its namespace's newest, with its pending writes."""
        thread_id, checkpoint_ns, checkpoint_id = _address(config)
        if self.serve_last and not checkpoint_ns:
            remembered = self.last_put.answer(checkpoint_id)
            if remembered is not None:
                return remembered
        held = self._cache.held(thread_id, checkpoint_ns)
        known = {channel: tracked.version for channel, tracked in held.items()}
        stored = await self._store.get(thread_id, checkpoint_ns, checkpoint_id, known)
        if stored is None:
            if checkpoint_id is None:  # nothing stored, nothing to append to (a new thread
                self._cache.forget_scope(thread_id, checkpoint_ns)  # under a deleted one's id)
                self._sizes = {}
            return None
        folder = Folder(self.serde, held)
        found = self._tuple(stored, folder)
        if self._limit is not None and not checkpoint_ns:
            versions = stored.frame.versions.items()
            self._sizes = {channel: folder.size(channel, v) for channel, v in versions}
        # Hold what was folded for the next write, which appends to it (an older checkpoint,
        # read for history, does not displace what is held).
        for channel, value in found.checkpoint["channel_values"].items():
            version = stored.frame.versions[channel]
            if not isinstance(value, list) or (checkpoint_id is not None and channel in held):
                continue
            if tracked := folder.tracked(channel, version, value):
                self._cache.hold(thread_id, checkpoint_ns, channel, tracked)
        return found

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Checkpoints newest first, filtered by thread, namespace, checkpoint id, metadata and
        `before`, as LangGraph's own savers filter them."""
        configurable = (config or {}).get("configurable", {})
        thread_id = configurable.get("thread_id")
        checkpoint_ns = configurable.get("checkpoint_ns")
        held = (
            self._cache.held(thread_id, checkpoint_ns)
            if thread_id is not None and checkpoint_ns is not None
            else {}
        )
        found = await self._store.list(
            None if thread_id is None else str(thread_id),
            checkpoint_ns,
            checkpoint_id=configurable.get("checkpoint_id"),
            metadata=filter,
            before=(before or {}).get("configurable", {}).get("checkpoint_id"),
            limit=limit,
            known={channel: tracked.version for channel, tracked in held.items()},
        )
        # One folder for the whole list: a chain stops at a version folded for a newer one.
        folders: dict[tuple[str, str], Folder] = {}
        for stored in found:
            scope = (stored.frame.thread_id, stored.frame.checkpoint_ns)
            folder = folders.get(scope)
            if folder is None:
                # `held` is only ever of the one scope listed (thread and namespace given).
                folder = folders[scope] = Folder(self.serde, held)
            yield self._tuple(stored, folder)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Stores a checkpoint and the blobs of the channels it changed."""
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        checkpoint_ns = str(configurable.get("checkpoint_ns", ""))
        frame_dict = cast(dict[str, Any], checkpoint.copy())
        values: dict[str, Any] = frame_dict.pop("channel_values")
        self._check((channel, values[channel]) for channel in new_versions if channel in values)
        stored_metadata = dict(get_serializable_checkpoint_metadata(config, metadata))
        run_id = _run_id(config, stored_metadata)
        if run_id:
            stored_metadata.setdefault("run_id", run_id)
        # Encoded now, before any await: the cache moves in the order LangGraph puts.
        scope = (thread_id, checkpoint_ns)
        blobs = [
            encode(self.serde, self._cache, scope, channel, str(version), values)
            for channel, version in new_versions.items()
        ]
        if self._limit is not None and not checkpoint_ns:
            self._check_size(thread_id, checkpoint, blobs)
        frame_type, frame = self.serde.dumps_typed(frame_dict)
        record = CheckpointFrame(
            thread_id,
            checkpoint_ns,
            checkpoint["id"],
            configurable.get("checkpoint_id"),
            run_id,
            frame_type,
            frame,
            {channel: str(v) for channel, v in checkpoint["channel_versions"].items()},
            stored_metadata,
        )
        try:
            await self._store.put(record, blobs)
        except BaseException:
            # What the cache says was stored may not have been: the next put writes whole.
            self._cache.forget_scope(thread_id, checkpoint_ns)
            if not checkpoint_ns:
                self.last_put.forget()
            raise
        stored = _config(thread_id, checkpoint_ns, checkpoint["id"])
        if not checkpoint_ns:
            parent = _config(thread_id, "", record.parent_id) if record.parent_id else None
            meta = cast(CheckpointMetadata, stored_metadata)
            self.last_put.checkpointed(stored, checkpoint, meta, parent)
            if self._on_root_put is not None:
                self._on_root_put(metadata)
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Stores a task's writes against the checkpoint `config` names."""
        thread_id, checkpoint_ns, checkpoint_id = _address(config)
        if checkpoint_id is None:
            raise ValueError("put_writes needs the config of a stored checkpoint")
        self._check(writes)
        records = [
            WriteRecord(
                task_id,
                WRITES_IDX_MAP.get(channel, idx),
                channel,
                *self.serde.dumps_typed(value),
                task_path,
            )
            for idx, (channel, value) in enumerate(writes)
        ]
        written = sum(len(record.data) for record in records)
        if self._limit is not None and written > self._limit:
            self.refused = StateTooLarge(
                written, self._limit, thread_id, what=f"a task's writes take {written} bytes"
            )
            raise self.refused
        run_id = _run_id(config, {})
        try:
            await self._store.put_writes(thread_id, checkpoint_ns, checkpoint_id, run_id, records)
        except BaseException:
            if not checkpoint_ns:
                self.last_put.forget()
            raise
        if not checkpoint_ns:
            self.last_put.wrote(checkpoint_id, task_id, writes, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Deletes every checkpoint, blob and write of a thread."""
        self._cache.forget({thread_id})
        await self._store.delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Deletes every checkpoint, blob and write the runs wrote (rollback)."""
        touched = await self._store.delete_for_runs(run_ids)
        self._cache.forget(touched)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copies a thread's checkpoints, blobs and writes to another thread."""
        await self._store.copy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keeps each namespace's newest checkpoint (`keep_latest`) or nothing (`delete`)."""
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}")
        self._cache.forget(set(thread_ids))
        await self._store.prune(thread_ids, keep_latest=strategy == "keep_latest")
        self._cache.forget(set(thread_ids))

    def _check(self, writes: Iterable[tuple[str, Any]]) -> None:
        """Refuses (`InvalidInput`) values nested deeper than a client may send, and everything
        once one was. A channel's value is a key of the state (of the update), one level in."""
        if self.refused is None:
            for channel, value in writes:
                if nests_deeper(value, MAX_JSON_DEPTH - 1):
                    self.refused = InvalidInput(
                        f"update of {channel!r}: objects and lists nest more than"
                        f" {MAX_JSON_DEPTH} levels deep"
                    )
                    break
        if self.refused is not None:
            raise self.refused

    def _check_size(self, thread_id: str, checkpoint: Checkpoint, blobs: list[BlobRecord]) -> None:
        """Refuses (`StateTooLarge`) a root checkpoint whose channels would take more than the
        limit stored: the changed ones as just encoded (a list's whole chain, from the cache),
        the others as last loaded or put."""
        assert self._limit is not None
        held = self._cache.held(thread_id, "")
        sizes = dict(self._sizes)
        for blob in blobs:
            tracked = held.get(blob.channel)
            if tracked is not None and tracked.version == blob.version:  # a list
                sizes[blob.channel] = tracked.size
            else:
                sizes[blob.channel] = len(blob.data)
        total = sum(sizes.get(channel, 0) for channel in checkpoint["channel_versions"])
        if total > self._limit:
            # What `encode` remembered was never stored: the next put writes whole.
            self._cache.forget_scope(thread_id, "")
            self.refused = StateTooLarge(total, self._limit, thread_id)
            raise self.refused
        self._sizes = sizes

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The next version: the counter, plus a random fraction so two forks never collide."""
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            number = int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    def _tuple(self, stored: StoredCheckpoint, folder: Folder) -> CheckpointTuple:
        frame = stored.frame
        checkpoint = cast(dict[str, Any], self.serde.loads_typed((frame.type, frame.frame)))
        values: dict[str, Any] = {}
        for channel, version in frame.versions.items():
            value = folder.value(channel, version, stored.blobs.get(channel))
            if value is not MISSING:
                values[channel] = value
        checkpoint["channel_values"] = values
        parent = (
            _config(frame.thread_id, frame.checkpoint_ns, frame.parent_id)
            if frame.parent_id
            else None
        )
        return CheckpointTuple(
            config=_config(frame.thread_id, frame.checkpoint_ns, frame.checkpoint_id),
            checkpoint=cast(Checkpoint, checkpoint),
            metadata=cast(CheckpointMetadata, dict(frame.metadata)),
            parent_config=parent,
            pending_writes=[
                (w.task_id, w.channel, self.serde.loads_typed((w.type, w.data)))
                for w in stored.writes
            ],
        )


def _address(config: RunnableConfig) -> tuple[str, str, str | None]:
    configurable = config["configurable"]
    checkpoint_id = configurable.get("checkpoint_id")
    return (
        str(configurable["thread_id"]),
        str(configurable.get("checkpoint_ns", "")),
        None if checkpoint_id is None else str(checkpoint_id),
    )


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def _run_id(config: RunnableConfig, metadata: dict[str, Any]) -> str:
    """The run a checkpoint or write belongs to: Turnstile puts it in `configurable`."""
    for source in (config.get("configurable") or {}, metadata, config.get("metadata") or {}):
        run_id = source.get("run_id")
        if run_id:
            return str(run_id)
    return ""
