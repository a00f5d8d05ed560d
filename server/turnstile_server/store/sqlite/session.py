"""A session: a SQLite connection seen from its own thread, statements retried where safe."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from typing import Any

from turnstile_server.store.sqlite.retry import RetryPolicy, is_transient, retried

log = logging.getLogger(__name__)

Row = sqlite3.Row


class Session:
    """A connection seen from its own thread: statements retried where that is safe.

    Safe means the transaction state is what it was before the attempt: outside a transaction
    the failed statement changed nothing; inside one, SQLite undid just that statement. If
    SQLite abandoned the transaction instead, the error propagates.
    """

    __slots__ = ("_conn", "_policy")

    def __init__(self, conn: sqlite3.Connection, policy: RetryPolicy) -> None:
        self._conn = conn
        self._policy = policy

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""
        return self._conn.in_transaction

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted on the connection since it was opened."""
        return self._conn.total_changes

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Cursor:
        """Executes one statement, retried as the class says."""
        args = tuple(parameters)
        was_in_transaction = self._conn.in_transaction

        def safe(exc: BaseException) -> bool:
            return is_transient(exc) and self._conn.in_transaction == was_in_transaction

        return retried(self._policy, lambda: self._conn.execute(sql, args), safe)

    def one(self, sql: str, parameters: Iterable[Any] = ()) -> Row | None:
        """The first row of a query, or None."""
        row: Row | None = self.execute(sql, parameters).fetchone()
        return row

    def all(self, sql: str, parameters: Iterable[Any] = ()) -> list[Row]:
        """Every row of a query."""
        return list(self.execute(sql, parameters).fetchall())

    def commit(self) -> None:
        """Commits; a COMMIT that failed busy leaves the transaction open, so it is retried."""
        retried(
            self._policy,
            self._conn.commit,
            lambda exc: is_transient(exc) and self._conn.in_transaction,
        )

    def rollback(self) -> None:
        """Rolls back, logging (not raising) a failure: the next transaction rolls back first."""
        try:
            self._conn.rollback()
        except sqlite3.Error:
            log.warning("rollback failed; the next transaction rolls back first", exc_info=True)
