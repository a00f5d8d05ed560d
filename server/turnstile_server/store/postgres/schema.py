"""Numbered schema migrations for PostgreSQL, applied in order by `migrate`.

`schema_migrations` records each applied number. Migrating takes a transaction-scoped advisory
lock first, so replicas starting together apply each migration once; a database at a newer
version than this server knows is refused.

The columns mirror the SQLite schema (`store/sqlite/schema.py`): JSON is kept as text (exactly
what was written, and `\\u0000` is allowed, which `jsonb` refuses), times in microseconds.
"""

from __future__ import annotations

import logging
from typing import Any

from turnstile_server.store.postgres.leases_schema import (
    DEPLOYMENT_MIGRATION,
    LEASES_MIGRATION,
    UNWINDING_MIGRATION,
)

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x7475726E  # "turn": the advisory lock key migrations hold
"""The advisory lock key that serialises migrations across processes."""

MIGRATIONS: list[str] = [
    # 1: threads, runs, checkpoints, assistants; rolled-back request ids; LangGraph's rows.
    """
    CREATE TABLE assistants (
        seq BIGSERIAL NOT NULL UNIQUE,
        assistant_id TEXT PRIMARY KEY,
        graph_id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}',
        create_time BIGINT NOT NULL,
        update_time BIGINT NOT NULL
    );
    CREATE TABLE threads (
        seq BIGSERIAL NOT NULL UNIQUE,
        thread_id TEXT PRIMARY KEY,
        metadata TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('idle', 'busy', 'interrupted', 'error')),
        create_time BIGINT NOT NULL,
        update_time BIGINT NOT NULL,
        request_id TEXT UNIQUE,
        watch_epoch BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX threads_by_update ON threads (update_time);
    CREATE TABLE runs (
        seq BIGSERIAL PRIMARY KEY,
        run_id TEXT NOT NULL UNIQUE,
        thread_id TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
        assistant_id TEXT NOT NULL,
        graph_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (
            status IN ('pending', 'running', 'success', 'error', 'timeout', 'interrupted')),
        multitask_strategy TEXT NOT NULL,
        input TEXT,
        config TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}',
        stream_mode TEXT NOT NULL DEFAULT '["values"]',
        create_time BIGINT NOT NULL,
        start_time BIGINT,
        end_time BIGINT,
        not_before BIGINT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        error_type TEXT,
        error_message TEXT,
        cancel_action TEXT CHECK (cancel_action IN ('interrupt', 'rollback')),
        cancel_reason TEXT NOT NULL DEFAULT '',
        superseded_by TEXT NOT NULL DEFAULT '',
        request_id TEXT UNIQUE,
        timeout_seconds DOUBLE PRECISION,
        durability TEXT NOT NULL DEFAULT 'sync'
            CHECK (durability IN ('sync', 'async', 'exit'))
    );
    -- The backstop for "never two runs executing on one thread".
    CREATE UNIQUE INDEX runs_one_running_per_thread ON runs (thread_id) WHERE status = 'running';
    CREATE INDEX runs_by_thread ON runs (thread_id, seq);
    CREATE INDEX runs_inflight ON runs (status) WHERE status IN ('pending', 'running');
    CREATE INDEX runs_inflight_by_thread ON runs (thread_id, seq)
        WHERE status IN ('pending', 'running');
    CREATE TABLE checkpoints (
        seq BIGSERIAL PRIMARY KEY,
        checkpoint_id TEXT NOT NULL UNIQUE,
        thread_id TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
        run_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('input', 'step')),
        update_json TEXT NOT NULL,
        create_time BIGINT NOT NULL
    );
    CREATE INDEX checkpoints_by_thread ON checkpoints (thread_id, seq);
    CREATE INDEX checkpoints_by_run ON checkpoints (run_id, seq);
    CREATE TABLE rolled_back_requests (
        request_id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        rolled_back_time BIGINT NOT NULL
    );
    CREATE INDEX rolled_back_requests_by_time ON rolled_back_requests (rolled_back_time);
    -- LangGraph's rows name their thread without a foreign key: a saver may be handed any id.
    -- Ids compare and sort byte by byte ("C"), as on SQLite, whatever the database's locale.
    CREATE TABLE lg_checkpoints (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        parent_id TEXT COLLATE "C",
        run_id TEXT NOT NULL,
        type TEXT NOT NULL,
        frame BYTEA NOT NULL,
        versions TEXT NOT NULL,
        metadata TEXT NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    );
    CREATE INDEX lg_checkpoints_by_run ON lg_checkpoints (run_id);
    CREATE TABLE lg_blobs (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        channel TEXT NOT NULL,
        version TEXT COLLATE "C" NOT NULL,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('full', 'append', 'empty')),
        base TEXT COLLATE "C",
        type TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
    );
    CREATE TABLE lg_writes (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        checkpoint_id TEXT COLLATE "C" NOT NULL,
        task_id TEXT COLLATE "C" NOT NULL,
        idx INTEGER NOT NULL,
        run_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        type TEXT NOT NULL,
        data BYTEA NOT NULL,
        task_path TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    );
    CREATE INDEX lg_writes_by_run ON lg_writes (run_id);
    """,
    # 2: the LangGraph and human-in-the-loop run options (store/run_columns.py names them for
    # every backend, with SQLite's encodings: JSON as text, flags as integers), the interrupts
    # a run's new input discarded, and a thread's pending interrupts while it waits for input
    # (NULL when it does not). SQLite's migration 8.
    """
    ALTER TABLE runs ADD COLUMN context TEXT;
    ALTER TABLE runs ADD COLUMN stream_subgraphs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN command TEXT;
    ALTER TABLE runs ADD COLUMN interrupt_before TEXT;
    ALTER TABLE runs ADD COLUMN interrupt_after TEXT;
    ALTER TABLE runs ADD COLUMN checkpoint_id TEXT;
    ALTER TABLE runs ADD COLUMN close_tool_calls INTEGER;
    ALTER TABLE runs ADD COLUMN on_pending_interrupt TEXT NOT NULL DEFAULT 'discard'
        CHECK (on_pending_interrupt IN ('discard', 'reject'));
    ALTER TABLE runs ADD COLUMN discarded_interrupts TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE threads ADD COLUMN interrupts TEXT;
    """,
    # 3: replicas' leases, runs' epochs and owners, checkpoints' epochs, the attempts' audit.
    LEASES_MIGRATION,
    # 4: rolled-back runs as they were when deleted (the row as JSON, so that later columns
    # of `runs` need no migration here), kept a day: JoinRun and WaitRun on any replica
    # answer them as the replica that rolled them back does.
    """
    CREATE TABLE rolled_back_runs (
        run_id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
        run_row TEXT NOT NULL,
        rolled_back_time BIGINT NOT NULL
    );
    CREATE INDEX rolled_back_runs_by_time ON rolled_back_runs (rolled_back_time);
    """,
    # 5: how the deployment relays events, and what each incarnation agreed to.
    DEPLOYMENT_MIGRATION,
    # 6: the graphs each incarnation serves; the attempts of runs deleted while executing,
    # until they unwound.
    UNWINDING_MIGRATION,
]


async def migrate(conn: Any) -> tuple[int, int]:
    """Applies the migrations the database lacks, in one transaction under the migration
    lock; returns the versions before and after. RuntimeError if the database is newer."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY,"
            " applied_time TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = int(
            await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        )
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema version {version} is newer than this server ({len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(script)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
            log.info("applied schema migration %d", number)
    return version, len(MIGRATIONS)
