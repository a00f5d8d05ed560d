"""Where the relay keeps things in Redis, and how a stream entry's id carries our `seq`.

Every key starts with the deployment's prefix (`--redis-key-prefix`):

- `<prefix>run:<run_id>`: the run's events, a Redis Stream whose entry ids are `0-<seq>`, so
  a subscriber resumes after `seq` k by reading after `0-k`, exactly.
- `<prefix>fence:<run_id>`: the highest epoch that published the run's events; a publish
  from a lower epoch (an attempt that lost its run) is refused (`fence.py`).
- `<prefix>thread:<thread_id>`: the thread's run starts, events and ends, in the order
  their replicas published them, for WatchThread on every replica: ids
  `<incarnation>-<n>` that Redis numbers in the publish script, so `incarnation << 32 | n`
  + 1 is the watch's `seq` everywhere (`thread_seq`).
- `<prefix>incarnation:<thread_id>`: the last incarnation the thread's stream was given
  (`fence.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

LOW_BITS = 32
"""A `seq`'s low bits number the events of one attempt (see `events.SEQ_EPOCH_BITS`)."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names under one prefix."""

    prefix: str

    def run(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}"

    def fence(self, run_id: str) -> str:
        return f"{self.prefix}fence:{run_id}"

    def thread(self, thread_id: str) -> str:
        return f"{self.prefix}thread:{thread_id}"

    def incarnation(self, thread_id: str) -> str:
        """The last incarnation the thread's stream was given (kept twice its TTL)."""
        return f"{self.prefix}incarnation:{thread_id}"


def entry_id(seq: int) -> str:
    """The id of the run stream's entry for `seq`."""
    return f"0-{seq}"


def seq_of(entry: bytes | str) -> int:
    """The `seq` of a run stream's entry id."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.partition("-")[2])


def follows(position: int, seq: int) -> bool:
    """Whether `seq` comes right after `position`: the next event of the same attempt, or,
    from a position before any event of an attempt (`position`'s low bits 0: after_seq 0, or
    an attempt's base), the first event of a later attempt (an attempt's events start at
    `(attempt - 1) << 32 + 1`). Not from the middle of an attempt to the next one: what the
    cut attempt emitted after its last published event (its replica died with them, or
    Redis was down) is not known, so anything else means events in between may be gone
    (unless the attempt's `closed` entry says it was all published: `run_stream.py`)."""
    if seq == position + 1:
        return True
    low = (1 << LOW_BITS) - 1
    return position & low == 0 and seq & low == 1 and seq >> LOW_BITS > position >> LOW_BITS


def thread_seq(entry: bytes | str) -> int:
    """The watch `seq` of a thread stream's entry id `<incarnation>-<n>`: Redis numbers an
    incarnation's entries from 0, the seq's low bits from 1 (so that the position before
    the first, `incarnation << 32`, is of the incarnation too)."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    incarnation, _, n = text.partition("-")
    return int(incarnation) << LOW_BITS | (int(n) + 1)


def thread_entry_id(seq: int) -> str:
    """The id of the thread stream's entry for watch `seq` (inverse of `thread_seq`)."""
    return f"{seq >> LOW_BITS}-{(seq & ((1 << LOW_BITS) - 1)) - 1}"
