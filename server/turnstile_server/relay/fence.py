"""The fenced publish: one Lua script that appends a batch of a run's events to its streams
only if the publishing attempt's epoch is not older than the newest that published.

The epoch is the run's fencing token from the database (`RunRecord.epoch`, bumped by every
claim and takeover, `store/postgres/leases.py`). The script runs atomically in Redis: it reads
`fence:<run>`, refuses a lower epoch (returns -1, nothing appended), raises the fence to the
publisher's epoch, then XADDs each event with its explicit id `0-<seq>`. A batch whose first id
is not above the stream's newest (a retry of a batch that landed, or events of an attempt
that lost the run to a later one) is refused as a whole (returns -2 and the newest `seq`):
Redis does not undo a script's writes when one of them fails, so the script checks first.

The thread's entries (for WatchThread) go to the thread stream with ids `<incarnation>-*`:
Redis numbers them 1, 2, 3 ... under the stream's incarnation, atomically in this script,
whichever replica publishes, so the id is the watch's `seq` on every replica
(`thread_feed.py`). A stream that does not exist (new, expired, Redis restarted) starts a new
incarnation: the larger of Redis's clock in seconds since 2023-11-14 (`EPOCH_OFFSET`, so
that `incarnation << 32` stays within the proto's int64 `seq` until 2091, not 2038) and one
more than the last incarnation this thread's stream was given (`incarnation:<thread>`, kept
twice the stream's TTL, so it outlives the stream), so a seq of the stream's previous life
never names an entry of the new one. The counter is the thread's own: a deployment that
creates many threads a second keeps its incarnations at the clock, where one counter for all
threads would run ahead of it by one per new thread and overflow the seq within months.
A `gap` (run events lost before they were published) is a thread entry too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EPOCH_OFFSET = 1_700_000_000
"""Seconds subtracted from Redis's clock to make a thread stream's incarnation (in `PUBLISH`)."""

PUBLISH = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = tonumber(ARGV[1])
if epoch < fence then
  return {-1, fence}
end
local ttl = ARGV[3]
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
local n = #ARGV - 5
if n <= 0 then
  return {0, 0}
end
local first = nil
for i = 6, #ARGV, 4 do
  if ARGV[i] ~= '' then
    first = tonumber(string.sub(ARGV[i], 3))
    break
  end
end
if first ~= nil then
  local top = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #top > 0 then
    local last = tonumber(string.sub(top[1][1], 3))
    if first <= last then
      return {-2, last}
    end
  end
end
local maxlen = ARGV[2]
local origin = ARGV[4]
local run_id = ARGV[5]
local added = 0
local incarnation = nil
for i = 6, #ARGV, 4 do
  local id, flag, frame, watched = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if id ~= '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, id, 'f', frame, 'e', flag)
    added = added + 1
  end
  if KEYS[3] ~= '' and (watched ~= '' or flag == 'gap') then
    if incarnation == nil then
      local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
      if #newest > 0 then
        incarnation = string.match(newest[1][1], '^(%d+)-')
      else
        local now = tonumber(redis.call('TIME')[1]) - 1700000000
        local last = tonumber(redis.call('GET', KEYS[4]) or '0')
        incarnation = string.format('%d', math.max(now, last + 1))
        redis.call('SET', KEYS[4], incarnation, 'EX', 2 * tonumber(ttl))
      end
    end
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, incarnation .. '-*',
      'f', watched, 'o', origin, 'r', run_id, 'q', string.sub(id, 3), 'k', flag)
  end
end
if added > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
end
if KEYS[3] ~= '' then
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[4], 2 * tonumber(ttl))
end
return {added, 0}
"""
"""KEYS: fence, run stream, thread stream ('' for none), the thread stream's incarnation.
ARGV: epoch, max events, ttl s, origin, run id, then one quadruple per entry: id `0-<seq>` ('' for a
thread-only entry), flag, the run event's frame, the thread event's frame without its seq
('' for none)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a publish: a run event (`seq` > 0) and/or a thread event."""

    seq: int
    flag: str  # "" an event, "end" the run's last, "gap" events lost before it, "start" a
    # start, "closed" the attempt's events all published before its replica handed it over
    frame: bytes = b""
    watched: bytes = b""  # the thread's framing of it, without seq


@dataclass(frozen=True, slots=True)
class Published:
    """What a publish did: `added` entries, or refused: `stale` (a later epoch published),
    or `behind` (the stream already holds up to `newest`)."""

    added: int = 0
    stale: bool = False
    behind: bool = False
    newest: int = 0


def arguments(
    epoch: int, max_events: int, ttl: int, origin: str, run_id: str, entries: Sequence[Entry]
) -> list[Any]:
    """The script's ARGV for a batch."""
    args: list[Any] = [epoch, max_events, ttl, origin, run_id]
    for entry in entries:
        args += [f"0-{entry.seq}" if entry.seq else "", entry.flag, entry.frame, entry.watched]
    return args


def outcome(reply: Sequence[Any]) -> Published:
    """The script's reply as a `Published`."""
    code, value = int(reply[0]), int(reply[1])
    if code == -1:
        return Published(stale=True, newest=value)
    if code == -2:
        return Published(behind=True, newest=value)
    return Published(added=code)
