"""Log output: `text` lines for people, `json` objects (one per line) for log collectors.

Both show the fields a call passes as `extra` (`thread_id`, `run_id`, ...): text appends them
as `key=value`, json adds them as keys.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
QUEUED_LINES = 10_000  # log lines waiting for stderr at most (a few MB); later ones are dropped
_WRITTEN_AT_ONCE = 1_000  # queued lines the writer takes for one write at most
_LINGER_SECONDS = 0.01  # how long the writer waits for more lines before a write
_QUOTED = re.compile(r"[\s\"'=]")  # what makes a field's text need quotes

# What every LogRecord carries; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a logging call passed as `extra`."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._seconds = _PerSecond(
            lambda second: time.strftime(self.default_time_format, self.converter(second))
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """As `logging.Formatter` writes it (`2026-11-21 09:30:00,123`)."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return f"{self._seconds(record.created)},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{k}={_text(v)}" for k, v in extras(record).items())
        return f"{line} {fields}" if fields else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `timestamp` (UTC, ISO 8601), `level`, `logger`, `message`,
    the `extra` fields, and `exception` when there is one."""

    def __init__(self) -> None:
        super().__init__()
        self._seconds = _PerSecond(
            lambda second: datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        )

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            # `2026-11-21T09:30:00.123Z`
            "timestamp": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _PerSecond:
    """A record's time to the second, formatted by `format_second` once per second."""

    def __init__(self, format_second: Callable[[int], str]) -> None:
        self._format = format_second
        self._last: tuple[int, str] = (-1, "")  # the last second formatted, and its text

    def __call__(self, created: float) -> str:
        second = int(created)
        cached, text = self._last
        if cached != second:
            text = self._format(second)
            self._last = (second, text)
        return text


@contextmanager
def configured(level: str, log_format: str, *, queued_lines: int = QUEUED_LINES) -> Iterator[None]:
    """Sends the server's logs to stderr at `level`, as `text` or `json`, while in the block.

    A logging call only hands its record to a queue; a thread formats and writes it, with the
    lines queued together, so a slow stderr (a full pipe to a log collector) never stalls the
    event loop. While `queued_lines` wait, further lines are dropped, and a warning says how
    many where they are missing. Leaving the block writes every record still queued. An
    unknown level or format is a ValueError.
    """
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {log_format!r}")
    # Neither format shows the caller's file and line, the thread or the process: a record
    # need not look them up (the logging module's documented switches; a few us per line).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    handoff = _Handoff(records, queued_lines)
    writer = _Writer(records, handler)
    root = logging.getLogger()
    previous = root.level
    root.setLevel(level.upper())
    root.addHandler(handoff)
    writer.start()
    try:
        yield
    finally:
        # Later records (interpreter shutdown) go to logging's last resort: warnings, stderr.
        root.removeHandler(handoff)
        root.setLevel(previous)
        handoff.acquire()  # as `enqueue` is
        try:
            handoff.flush_dropped()
        finally:
            handoff.release()
        records.put_nowait(None)
        writer.join()


class _Writer(threading.Thread):
    """Formats the queued records and writes the lines waiting together with one write; ends
    when it takes None.

    A line is written at most `_LINGER_SECONDS` after it was queued, together with the lines
    queued meanwhile: under load one wake-up and one write serve many lines. (Each wake-up
    takes the GIL from a busy event loop, and each write gives it up and takes it back; with a
    write per line the server's runs per second were about 6% lower.)
    """

    def __init__(
        self,
        records: queue.SimpleQueue[logging.LogRecord | None],
        handler: logging.StreamHandler[TextIO],
    ) -> None:
        super().__init__(name="turnstile-log-writer", daemon=True)
        self._records = records
        self._handler = handler

    def run(self) -> None:
        while True:
            batch, last = self._take()
            if batch:
                self._write(batch)
            if last:
                return

    def _take(self) -> tuple[list[logging.LogRecord], bool]:
        """The records waiting, once the first has lingered; and whether None came after."""
        record = self._records.get()
        if record is not None:
            time.sleep(_LINGER_SECONDS)
        batch: list[logging.LogRecord] = []
        while record is not None:
            batch.append(record)
            if len(batch) >= _WRITTEN_AT_ONCE:
                return batch, False
            try:
                record = self._records.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _write(self, batch: list[logging.LogRecord]) -> None:
        handler = self._handler
        lines = []
        for record in batch:
            try:
                lines.append(handler.format(record))
            except Exception:
                handler.handleError(record)  # as a handler does: a traceback on stderr
        if not lines:
            return
        try:
            handler.stream.write(handler.terminator.join(lines) + handler.terminator)
            handler.flush()
        except Exception:
            handler.handleError(batch[0])


class _Handoff(logging.handlers.QueueHandler):
    """Queues records as they are (the writer's thread formats them, tracebacks included);
    drops and counts those that find `limit` records waiting."""

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | None], limit: int) -> None:
        super().__init__(records)
        self._records = records
        self._limit = limit
        self._dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The base class formats here, in the caller's thread, and copies the record.
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock, so every thread's drops are counted.
        if self._records.qsize() >= self._limit:
            self._dropped += 1
            return
        self.flush_dropped()
        self._records.put_nowait(record)

    def flush_dropped(self) -> None:
        """Queues the warning for the lines dropped since the last one queued, if any."""
        if self._dropped:
            self._records.put_nowait(
                logging.LogRecord(
                    __name__,
                    logging.WARNING,
                    "",
                    0,
                    "%d log lines dropped: stderr did not keep up",
                    (self._dropped,),
                    None,
                )
            )
            self._dropped = 0


def _text(value: Any) -> str:
    """A field's value as one token: quoted as JSON when it is empty or has spaces or quotes."""
    text = str(value)
    if text and not _QUOTED.search(text):
        return text
    return json.dumps(text, ensure_ascii=False)
