"""Which SQLite errors are worth retrying, how long to retry them, and what the rest become.

Transient: SQLITE_BUSY and SQLITE_LOCKED ("database is locked", "database table is locked"):
another connection holds a lock that it will release. They are retried (`retried`) with
jittered exponential backoff, a bounded number of times, and only where the caller says a retry
is safe. Unavailable: those same errors once the retries are spent, and I/O-type failures
(SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_CORRUPT, SQLITE_NOTADB, SQLITE_READONLY, a
bare `sqlite3.DatabaseError`). I/O errors are not retried: they rarely pass within
milliseconds, and SQLite may have abandoned the transaction. Both become `StoreUnavailable`
(gRPC `UNAVAILABLE`), which callers may retry with a request id. Every other error (a
constraint, a bug in our SQL) stays what it is.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from turnstile_server.errors import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})
_NAMES = {
    sqlite3.SQLITE_BUSY: "SQLITE_BUSY",
    sqlite3.SQLITE_LOCKED: "SQLITE_LOCKED",
    sqlite3.SQLITE_READONLY: "SQLITE_READONLY",
    sqlite3.SQLITE_IOERR: "SQLITE_IOERR",
    sqlite3.SQLITE_CORRUPT: "SQLITE_CORRUPT",
    sqlite3.SQLITE_FULL: "SQLITE_FULL",
    sqlite3.SQLITE_CANTOPEN: "SQLITE_CANTOPEN",
    sqlite3.SQLITE_NOTADB: "SQLITE_NOTADB",
}
# For errors that carry no result code (raised by hand, or by older interpreters).
_MESSAGES = {
    "database is locked": "SQLITE_BUSY",
    "database is busy": "SQLITE_BUSY",
    "table is locked": "SQLITE_LOCKED",
    "schema is locked": "SQLITE_LOCKED",
    "readonly database": "SQLITE_READONLY",
    "disk i/o error": "SQLITE_IOERR",
    "disk image is malformed": "SQLITE_CORRUPT",
    "disk is full": "SQLITE_FULL",
    "unable to open database": "SQLITE_CANTOPEN",
    "not a database": "SQLITE_NOTADB",
}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long the store waits out transient errors before it reports itself unavailable.

    Each attempt may first wait up to `busy_timeout_ms` inside SQLite for a lock; between
    attempts the wait doubles from `first_wait` to `max_wait` seconds, plus up to `first_wait`
    of jitter. The defaults give up after 8 attempts, about 8.5 s of locks held elsewhere.
    """

    attempts: int = 8
    first_wait: float = 0.005
    max_wait: float = 0.2
    busy_timeout_ms: int = 1000


def error_name(exc: BaseException) -> str | None:
    """Names a transient or unavailable SQLite error (`SQLITE_BUSY`, ...), else None."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.DataError
    ):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return _NAMES.get(code & 0xFF)
    message = str(exc).lower()
    for fragment, name in _MESSAGES.items():
        if fragment in message:
            return name
    return "DATABASE_ERROR" if type(exc) is sqlite3.DatabaseError else None


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a lock held elsewhere, which a later attempt may not meet."""
    return error_name(exc) in TRANSIENT


def retried(
    policy: RetryPolicy,
    call: Callable[[], T],
    safe: Callable[[BaseException], bool],
) -> T:
    """Calls `call()`; while it fails with an error `safe` accepts, calls it again after a
    backoff, `policy.attempts` times in all; then re-raises the last error.

    It sleeps in the calling thread: the store calls it in its connections' own threads.
    """
    try:
        return call()
    except sqlite3.Error as exc:
        if not safe(exc):
            raise
        first: list[BaseException] = [exc]

    def attempt() -> T:
        if first:  # the failure above is attempt 1, so the policy counts and waits from it
            raise first.pop()
        return call()

    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential_jitter(
            multiplier=policy.first_wait, max=policy.max_wait, jitter=policy.first_wait
        ),
        retry=retry_if_exception(safe),
        before_sleep=before_sleep_log(log, logging.DEBUG),
        reraise=True,
    )
    return retrying(attempt)


@contextmanager
def store_errors() -> Iterator[None]:
    """Turns transient errors that outlasted their retries, and I/O errors, into
    StoreUnavailable; lets every other exception through unchanged."""
    try:
        yield
    except sqlite3.Error as exc:
        name = error_name(exc)
        if name is None:
            raise
        log.warning("store unavailable: %s (%s)", exc, name)
        raise StoreUnavailable(
            f"the store is unavailable, retry later: {exc}", metadata={"sqlite_error": name}
        ) from exc
