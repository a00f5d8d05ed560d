"""Ids the server makes up: UUIDv7 (RFC 9562), so later ids sort after earlier ones.

Rows keyed by such ids go in at the end of their indexes, where the pages a group of writes
touches are the same few, rather than at random places across the whole index.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62


def new_id() -> str:
    """A fresh UUIDv7: 48 bits of Unix milliseconds, 12 bits of the millisecond's fraction
    (RFC 9562 method 3), 62 random bits."""
    ns = time.time_ns()
    ms, rest = divmod(ns, 1_000_000)
    fraction = rest * 4096 // 1_000_000
    random = int.from_bytes(os.urandom(8)) >> 2
    return str(uuid.UUID(int=(ms << 80) | _VERSION | (fraction << 64) | _VARIANT | random))
