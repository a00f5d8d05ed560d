"""The server's clock: the wall clock read once, then advanced by the monotonic clock.

Delays (`after_seconds`) are kept as times since the epoch so that they survive a restart, but
while the server runs they must follow the monotonic clock: with the wall clock stepped back an
hour, a run due in 2 s waited an hour; stepped forward, runs started early. So every time the
server records is its start's wall-clock reading plus the monotonic time since; the wall clock
is read again only at the next start. A step of the wall clock is logged, once per step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

STEP_US = 1_000_000
"""How far the wall clock may drift from the server's before it counts as stepped."""


class Clock:
    """Microseconds since the epoch: `wall()` at the first reading, `monotonic()` after."""

    def __init__(
        self,
        wall: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._anchor: tuple[int, int] | None = None  # (wall, monotonic) at the first reading
        self._logged = 0  # the wall clock's offset from ours when last logged, in µs

    def now_us(self) -> int:
        """The time, in microseconds since the epoch, on the monotonic clock since the anchor."""
        wall, monotonic = self._wall() // 1000, self._monotonic() // 1000
        if self._anchor is None:
            self._anchor = (wall, monotonic)
        now = self._anchor[0] + monotonic - self._anchor[1]
        offset = wall - now
        if abs(offset - self._logged) > STEP_US:
            step, self._logged = offset - self._logged, offset
            log.warning(
                "the system clock moved %+.1f s against the monotonic clock (%+.1f s since the"
                " server started); delays and the times recorded follow the monotonic clock"
                " until the server restarts",
                step / 1e6,
                offset / 1e6,
            )
        return now


CLOCK = Clock()
"""The process's clock, which the store reads."""
