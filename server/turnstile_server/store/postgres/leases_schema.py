"""The schema of replicas' leases (migration 3; `leases.py` uses it)."""

from __future__ import annotations

LEASES_MIGRATION = """
    CREATE TABLE replicas (
        incarnation TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        start_time TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        renew_time TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        expires_at TIMESTAMPTZ NOT NULL
    );
    ALTER TABLE runs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN owner TEXT;
    CREATE INDEX runs_running_by_owner ON runs (owner) WHERE status = 'running';
    ALTER TABLE checkpoints ADD COLUMN epoch BIGINT;
    -- One row per attempt, on the database's clock: who executed it, when, how it ended.
    CREATE TABLE run_attempts (
        thread_id TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
        run_id TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        owner TEXT NOT NULL,
        start_time TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        end_time TIMESTAMPTZ,
        outcome TEXT,
        PRIMARY KEY (run_id, epoch)
    );
    CREATE INDEX run_attempts_by_thread ON run_attempts (thread_id, start_time);
"""
"""Migration 3: leases, epochs and owners, checkpoints' epochs, the attempts' audit."""

DEPLOYMENT_MIGRATION = """
    -- What the replicas on this database agreed on: how they relay runs' events ("none", or
    -- "redis:<key prefix>"). Its row is also the lock under which a replica checks it.
    CREATE TABLE deployment (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        relay TEXT NOT NULL,
        update_time TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
    );
    -- The relay an incarnation agreed to (NULL until it did).
    ALTER TABLE replicas ADD COLUMN relay TEXT;
"""
"""Migration 5: the deployment's relay, and each incarnation's."""

UNWINDING_MIGRATION = """
    -- The graph ids an incarnation serves (the only ones whose runs it claims and starts).
    ALTER TABLE replicas ADD COLUMN graphs TEXT[] NOT NULL DEFAULT '{}';
    -- The attempts of runs deleted with their thread while they executed, until their
    -- replica has stopped them or its lease expired: what a DeleteThread answered on
    -- another replica waits for. Empty but for those moments.
    CREATE TABLE unwinding_attempts (
        run_id TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        owner TEXT NOT NULL,
        PRIMARY KEY (run_id, epoch)
    );
"""
"""Migration 6: the graphs each incarnation serves, the attempts of deleted runs still
unwinding."""
