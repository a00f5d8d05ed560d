"""One server process per SQLite database: an exclusive lock held while the database is open.

The store caches folded thread states and trusts that every checkpoint of the database is
written through it, so a second process writing the same file would leave the first one's
cache silently stale. Opening takes an exclusive `flock` on `<database>.lock` (never
deleted: a deleted lock file would let two openers lock different files) and holds it until
the store closes; the kernel releases it when a process dies, so a crash leaves no stale lock.
A second opener, in another process or the same one, is refused with `DatabaseInUse`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os


class DatabaseInUse(OSError):
    """Another server has the SQLite database open."""

    def __init__(self, database: str, holder: str) -> None:
        by = f" (process {holder})" if holder else ""
        super().__init__(
            f"the database {database} is in use by another Turnstile server{by}: one server"
            " process per SQLite database; stop that one, or use another file"
        )
        self.database = database


class ProcessLock:
    """The exclusive lock on a database's `.lock` file, held until `release`."""

    def __init__(self, fd: int, path: str) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, database: str) -> ProcessLock:
        """Takes the lock of `database` without waiting; DatabaseInUse if it is held."""
        path = f"{database}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise DatabaseInUse(database, holder) from None
        except BaseException:
            os.close(fd)
            raise
        # Who holds it, for the message a second opener gets.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Gives the lock up (closing the file releases it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)
