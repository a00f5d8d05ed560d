"""The epoch fence: a write of an attempt lands only while that attempt still holds its run.

An attempt holds its run while the run is RUNNING at the attempt's epoch and the lease of the
incarnation that claimed it (`runs.owner`) has not expired on the database's clock. The check
takes the run's row `FOR SHARE` in the write's own transaction, so a sweeper's or a claim's
`UPDATE` of the row (which bumps the epoch) waits for a write already past the check: every
write of the old epoch commits before the run is taken over, none after.
"""

from __future__ import annotations

from turnstile_server.store.interface import AttemptFenced
from turnstile_server.store.postgres.database import Conn

_HOLDS = (
    "SELECT r.epoch, r.status, r.owner, l.expires_at > clock_timestamp() AS alive"
    " FROM runs r LEFT JOIN replicas l ON l.incarnation = r.owner"
    " WHERE r.run_id = $1 FOR SHARE OF r"
)


async def fence(conn: Conn, run_id: str, epoch: int) -> bool:
    """Raises AttemptFenced unless the attempt of `run_id` at `epoch` holds the run; False
    when the run is gone (deleted with its thread, or rolled back: the caller's own rules
    apply), True when it holds. `epoch` 0 is an unfenced write: always True."""
    if not epoch:
        return True
    row = await conn.fetchrow(_HOLDS, run_id)
    if row is None:
        return False
    if row["epoch"] != epoch or row["status"] != "running" or not row["alive"]:
        raise AttemptFenced(
            f"run {run_id}: attempt at epoch {epoch} no longer holds it (epoch {row['epoch']},"
            f" {row['status']}, owner {row['owner']}"
            f" {'alive' if row['alive'] else 'lease expired'})"
        )
    return True
