"""A fault-injecting store for tests: SQLite errors raised where SQLite raises them.

`inject(db, faults)` slips a stand-in under each connection of a real SQLite `Database` (or of
a `SqliteStore`, such as the one `App.start` opened: `app.store`), in place of its
`sqlite3.Connection`. The
stand-in runs in the connection's worker thread, like SQLite, and before each statement and
commit asks the fault source whether to fail:

- `locked`: `OperationalError("database is locked")` (SQLITE_BUSY) before the statement runs,
  so nothing of it applied and an open transaction stays open, as SQLite leaves it;
- `io`: `OperationalError("disk I/O error")` (SQLITE_IOERR), after rolling back the open
  transaction, the worst SQLite may do on an I/O error;
- `lost`: "database is locked", with the transaction rolled back (SQLite may abandon a
  transaction on SQLITE_BUSY too).

`RandomFaults` draws from a seeded `random.Random`; which statement meets which draw depends on
scheduling, so tests assert what must hold for every pattern. It never fails one statement
(same SQL, same parameters) more than `max_streak` times in a row, fewer than the store's
attempts, so a retrying store always gets through. `ScriptedFaults` fails chosen statements.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

from turnstile_server.store import Store
from turnstile_server.store.sqlite import Database, SqliteStore

Kind = Literal["locked", "io", "lost"]
_ERRORS: dict[Kind, tuple[str, int, str]] = {
    "locked": ("database is locked", sqlite3.SQLITE_BUSY, "SQLITE_BUSY"),
    "lost": ("database is locked", sqlite3.SQLITE_BUSY, "SQLITE_BUSY"),
    "io": ("disk I/O error", sqlite3.SQLITE_IOERR, "SQLITE_IOERR"),
}


class Faults(Protocol):
    """Decides, in a connection's worker thread, whether a statement or commit fails."""

    def decide(self, sql: str, parameters: Any) -> Kind | None: ...


@dataclass
class RandomFaults:
    """Fails a share of statements and commits at random, reproducibly from `seed`."""

    seed: int
    locked: float = 0.0
    io: float = 0.0
    max_streak: int = 3
    active: bool = True
    injected: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    _rng: random.Random = field(init=False)
    _streaks: dict[tuple[str, str], int] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def decide(self, sql: str, parameters: Any) -> Kind | None:
        with self._lock:
            self.calls += 1
            if not self.active:
                return None
            key = (sql, repr(parameters))
            draw = self._rng.random()
            kind: Kind | None = None
            if draw < self.io:
                kind = "io"
            elif draw < self.io + self.locked:
                kind = "locked"
            if kind is None or self._streaks.get(key, 0) >= self.max_streak:
                self._streaks.pop(key, None)
                return None
            self._streaks[key] = self._streaks.get(key, 0) + 1
            self.injected[kind] += 1
            return kind


@dataclass
class Rule:
    """Fails the next `times` statements whose SQL contains `match` ("COMMIT" for commits)."""

    match: str
    kind: Kind
    times: int = 1
    fired: int = 0


@dataclass
class ScriptedFaults:
    """Fails exactly the statements its rules name; the first matching rule with fails left."""

    rules: list[Rule]
    statements: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def decide(self, sql: str, parameters: Any) -> Kind | None:
        with self._lock:
            self.statements.append(sql)
            for rule in self.rules:
                if rule.match in sql and rule.fired < rule.times:
                    rule.fired += 1
                    return rule.kind
            return None


class FaultyConnection:
    """Stands in for the `sqlite3.Connection` of a store connection."""

    def __init__(self, inner: sqlite3.Connection, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        self._check(sql, parameters)
        return self._inner.execute(sql, parameters)

    def commit(self) -> None:
        if self._inner.in_transaction:
            self._check("COMMIT", ())
        self._inner.commit()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _check(self, sql: str, parameters: Any) -> None:
        kind = self._faults.decide(sql, parameters)
        if kind is None:
            return
        if kind in ("io", "lost") and self._inner.in_transaction:
            self._inner.rollback()
        message, code, name = _ERRORS[kind]
        error = sqlite3.OperationalError(message)
        error.sqlite_errorcode = code
        error.sqlite_errorname = name
        raise error


@contextmanager
def inject(target: Database | Store, faults: Faults) -> Iterator[None]:
    """Puts `faults` under the writer and the reader of `target` until the block ends."""
    if not isinstance(target, Database):
        assert isinstance(target, SqliteStore), "faults are SQLite errors"
        target = target.db
    # The seam is each connection's `sqlite`, read by every store operation as it starts in the
    # connection's thread: the retries above it are what is tested.
    connections = target.connections
    originals = [conn.sqlite for conn in connections]
    for conn, original in zip(connections, originals, strict=True):
        assert original is not None, "the database is closed"
        conn.sqlite = cast(sqlite3.Connection, FaultyConnection(original, faults))
    try:
        yield
    finally:
        for conn, original in zip(connections, originals, strict=True):
            if conn.sqlite is not None:  # still open
                conn.sqlite = original
