"""Versioned schema migrations, applied in order on open; `PRAGMA user_version` is the version."""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: threads, runs, checkpoints, assistants.
    """
    CREATE TABLE assistants (
        assistant_id TEXT PRIMARY KEY,
        graph_id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL DEFAULT '{}',
        metadata TEXT NOT NULL DEFAULT '{}',
        create_time INTEGER NOT NULL,
        update_time INTEGER NOT NULL
    );
    CREATE TABLE threads (
        thread_id TEXT PRIMARY KEY,
        metadata TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL CHECK (status IN ('idle', 'busy', 'interrupted', 'error')),
        create_time INTEGER NOT NULL,
        update_time INTEGER NOT NULL,
        request_id TEXT UNIQUE
    );
    CREATE INDEX threads_by_update ON threads (update_time);
    CREATE TABLE runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
        create_time INTEGER NOT NULL,
        start_time INTEGER,
        end_time INTEGER,
        not_before INTEGER NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        error_type TEXT,
        error_message TEXT,
        cancel_action TEXT CHECK (cancel_action IN ('interrupt', 'rollback')),
        cancel_reason TEXT NOT NULL DEFAULT '',
        superseded_by TEXT NOT NULL DEFAULT '',
        request_id TEXT UNIQUE
    );
    -- The backstop for "never two runs executing on one thread".
    CREATE UNIQUE INDEX runs_one_running_per_thread ON runs (thread_id) WHERE status = 'running';
    CREATE INDEX runs_by_thread ON runs (thread_id, seq);
    CREATE INDEX runs_inflight ON runs (status) WHERE status IN ('pending', 'running');
    CREATE TABLE checkpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        checkpoint_id TEXT NOT NULL UNIQUE,
        thread_id TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
        run_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        source TEXT NOT NULL CHECK (source IN ('input', 'step')),
        update_json TEXT NOT NULL,
        create_time INTEGER NOT NULL
    );
    CREATE INDEX checkpoints_by_thread ON checkpoints (thread_id, seq);
    CREATE INDEX checkpoints_by_run ON checkpoints (run_id, seq);
    """,
    # 2: a counter per thread, bumped whenever the thread's watch stream is (re)created, so that
    # watch positions from an earlier stream never match a later one.
    """
    ALTER TABLE threads ADD COLUMN watch_epoch INTEGER NOT NULL DEFAULT 0;
    """,
    # 3: a per-run time limit (seconds; NULL means the server default).
    """
    ALTER TABLE runs ADD COLUMN timeout_seconds REAL;
    """,
    # 4: a thread's inflight runs found without walking its whole history of runs.
    """
    CREATE INDEX runs_inflight_by_thread ON runs (thread_id, seq)
        WHERE status IN ('pending', 'running');
    """,
    # 5: when a run's step checkpoints are written: 'sync', 'async' or 'exit'.
    """
    ALTER TABLE runs ADD COLUMN durability TEXT NOT NULL DEFAULT 'sync'
        CHECK (durability IN ('sync', 'async', 'exit'));
    """,
    # 6: LangGraph's checkpoints, channel blobs and pending writes (store/sqlite/langgraph.py).
    # Keyed by thread id without a foreign key: a LangGraph saver may be handed any thread id.
    # Checkpoints and writes are small rows kept in their key's b-tree (WITHOUT ROWID), and blobs
    # have no run index (a run's blobs come with its checkpoints): each put writes fewer pages.
    """
    CREATE TABLE lg_checkpoints (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        checkpoint_id TEXT NOT NULL,
        parent_id TEXT,
        run_id TEXT NOT NULL,
        type TEXT NOT NULL,
        frame BLOB NOT NULL,
        versions TEXT NOT NULL,
        metadata TEXT NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
    ) WITHOUT ROWID;
    CREATE INDEX lg_checkpoints_by_run ON lg_checkpoints (run_id);
    CREATE TABLE lg_blobs (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        channel TEXT NOT NULL,
        version TEXT NOT NULL,
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('full', 'append', 'empty')),
        base TEXT,
        type TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
    );
    CREATE TABLE lg_writes (
        thread_id TEXT NOT NULL,
        checkpoint_ns TEXT NOT NULL,
        checkpoint_id TEXT NOT NULL,
        task_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        run_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        type TEXT NOT NULL,
        data BLOB NOT NULL,
        task_path TEXT NOT NULL,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
    ) WITHOUT ROWID;
    CREATE INDEX lg_writes_by_run ON lg_writes (run_id);
    """,
    # 7: the request ids of rolled-back runs, so that a retried CreateRun is told, not admitted
    # again (the run's row, which held its request id, is deleted with it).
    """
    CREATE TABLE rolled_back_requests (
        request_id TEXT PRIMARY KEY,
        thread_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        rolled_back_time INTEGER NOT NULL
    );
    CREATE INDEX rolled_back_requests_by_time ON rolled_back_requests (rolled_back_time);
    """,
    # 8: the LangGraph and human-in-the-loop run options (store/run_columns.py names them for
    # every backend), the interrupts a run's new input discarded, and a thread's pending
    # interrupts while it waits for input (NULL when it does not; '[]' for a stop before or
    # after a node, which has no value).
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
]
