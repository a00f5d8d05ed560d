"""Ids the server makes up: UUIDv7 (RFC 9562), so later ids sort after earlier ones.

Rows keyed by such ids go in at the end of their indexes, where the pages a group of writes
touches are the same few, rather than at random places across the whole index.

Both kinds of id are formatted straight from their integer: building a `uuid.UUID` to print
it costs more than making the id. Their random bits come from `os.urandom`, drawn a few kB at a
time per thread.
"""

from __future__ import annotations

import os
import threading
import time

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62
_V4 = (0x4 << 76) | _VARIANT
_V4_MASK = ~((0xF << 76) | (0b11 << 62))


def new_id() -> str:
    """A fresh UUIDv7: 48 bits of Unix milliseconds, 12 bits of the millisecond's fraction
    (RFC 9562 method 3), 62 random bits."""
    ns = time.time_ns()
    ms, rest = divmod(ns, 1_000_000)
    fraction = rest * 4096 // 1_000_000
    random = int.from_bytes(_random_bytes(8)) >> 2
    return _format((ms << 80) | _VERSION | (fraction << 64) | _VARIANT | random)


def random_id() -> str:
    """A fresh random UUID (version 4), as `str(uuid.uuid4())`."""
    return _format((int.from_bytes(_random_bytes(16)) & _V4_MASK) | _V4)


def _format(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


POOL_BYTES = 4096  # random bytes a thread draws from the OS at once (256 UUIDv4s)


class _Pool(threading.local):
    """A thread's random bytes from `os.urandom`, handed out once each.

    One `os.urandom` call per 4 kB rather than per id: each call gives up the GIL around its
    system call, and the event loop then waits to take it back from the other threads. Per
    thread, so that two threads never hand out the same bytes.
    """

    data = b""
    used = 0


_POOL = _Pool()


def _random_bytes(n: int) -> bytes:
    pool = _POOL
    used = pool.used
    if used + n > len(pool.data):
        pool.data = os.urandom(POOL_BYTES)
        used = 0
    pool.used = used + n
    return pool.data[used : used + n]


def _forget_pool() -> None:
    # A forked child must not hand out the bytes its parent hands out too.
    _POOL.data = b""
    _POOL.used = 0


os.register_at_fork(after_in_child=_forget_pool)
