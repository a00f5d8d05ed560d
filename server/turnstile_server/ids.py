"""Ids the server makes up: UUIDv7 (RFC 9562), so later ids sort after earlier ones.

Rows keyed by such ids go in at the end of their indexes, where the pages a group of writes
touches are the same few, rather than at random places across the whole index.

Both kinds of id are formatted straight from their integer: building a `uuid.UUID` to print
it costs more than making the id.
"""

from __future__ import annotations

import os
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
    random = int.from_bytes(os.urandom(8)) >> 2
    return _format((ms << 80) | _VERSION | (fraction << 64) | _VARIANT | random)


def random_id() -> str:
    """A fresh random UUID (version 4), as `str(uuid.uuid4())`."""
    return _format((int.from_bytes(os.urandom(16)) & _V4_MASK) | _V4)


def _format(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
