"""Server configuration: defaults, then environment variables, then command-line flags.

Each option is declared once, as a `ServerConfig` field with an `Option` in its metadata: its
flag, environment variable, default, type, choices and help all come from there
(`turnstile_server.options` builds the `serve` flags and the reference table from them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Final

from turnstile_server.event_log import StreamLimits
from turnstile_server.json_size import MAX_ANSWER_BYTES
from turnstile_server.langgraph_json import checked_path
from turnstile_server.store.records import DURABILITIES, ON_PENDING_INTERRUPT
from turnstile_server.store.url import parse_database_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051
LOG_FORMATS: Final = ("text", "json")
OPTION: Final = "option"
"""The key of a field's `Option` in its metadata."""


@dataclass(frozen=True, slots=True)
class Option:
    """How one `ServerConfig` field is set: its `serve` flag (None: environment only) and help;
    `parse` turns the flag's or the variable's text into the value (default: the default's
    type), raising ValueError for a bad one; `run_field` names the run option (a `CreateRun`
    field, `records.RunOptions`) whose default the value is, for runs that leave it unset."""

    help: str
    flag: str | None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    parse: Callable[[str], Any] | None = None
    run_field: str | None = None


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = "",
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    run_field: str | None = None,
) -> Any:
    """Declares a field with its option; `flag=""` derives `--the-name`, None gives no flag.

    A list default is a comma-separated variable (and a repeatable flag) starting empty."""
    declared = {OPTION: Option(help, flag, metavar, choices, parse, run_field)}
    if isinstance(default, list):
        return field(default_factory=list, metadata=declared)
    return field(default=default, metadata=declared)


def env_name(setting: Field[Any]) -> str:
    """The environment variable of a field: `TURNSTILE_<NAME>`."""
    return f"TURNSTILE_{setting.name.upper()}"


def flag_name(setting: Field[Any]) -> str | None:
    """The `serve` flag of a field, or None when it is set from the environment only."""
    declared: Option = setting.metadata[OPTION]
    if declared.flag is None:
        return None
    return declared.flag or f"--{setting.name.replace('_', '-')}"


def default_of(setting: Field[Any]) -> Any:
    """The field's default value (a new empty list for list fields)."""
    return [] if setting.default is MISSING else setting.default


def parser_of(setting: Field[Any]) -> Callable[[str], Any]:
    """What turns a (non-list) field's text into its value."""
    declared: Option = setting.metadata[OPTION]
    return declared.parse or type(default_of(setting))


def _database_url(text: str) -> str:
    """`--database` as given, once a backend takes it (DatabaseUrlError is a ValueError)."""
    parse_database_url(text)
    return text


def _redis_url(text: str) -> str:
    """`--redis` as given, once it names a Redis server (`redis://` or `rediss://`)."""
    if text and not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{text!r} is not a Redis URL (redis://host:port/db)")
    return text


@dataclass(slots=True)
class ServerConfig:
    """Everything the app needs to start a server."""

    host: str = option(DEFAULT_HOST, "address to bind")
    port: int = option(DEFAULT_PORT, "port")
    database: str = option(
        "turnstile.db",
        "where the data lives: `sqlite:///path/to.db` or a bare path, one server process per file;"
        " or `postgresql://user@host:port/db`",
        parse=_database_url,
    )
    graphs: list[str] = option(
        [],
        "register a graph: `package.module:attr` (the current directory is importable) or"
        " `./path/to/file.py:attr`; repeatable (`agent` and `echo` are built in)",
        flag="--graph",
        metavar="NAME=MODULE:ATTR",
    )
    langgraph_config: str = option(
        "",
        "serve a LangGraph project: its langgraph.json's `graphs` (beside `--graph` ones; a"
        " built-in of the same id gives way), `env` and `dependencies`, paths relative to the"
        " file",
        flag="--config",
        metavar="LANGGRAPH_JSON",
        parse=checked_path,
    )
    max_running: int = option(
        64,
        "runs executing at once; threads waiting for a slot get the freed ones first come, first"
        " served, one run per turn (a thread whose run ends joins the back of the line), so a"
        " waiting thread starts after at most one run of each thread ahead of it",
    )
    graph_threads: int = option(
        1,
        "event loop threads that execute graphs, away from the loop that serves the API (gRPC,"
        " the store, streams), so a graph computing without awaiting does not stall other"
        " clients; 0 = graphs execute on the API's loop",
        metavar="N",
    )
    switch_interval_ms: float = option(
        1.0,
        "with graph threads: how often (ms) Python lets another thread run while one computes"
        " (`sys.setswitchinterval`; Python's default is 5), so the API's thread gets its turn"
        " while a graph computes; 0 = leave Python's",
        metavar="MS",
    )
    max_queued: int = option(
        100,
        "pending runs allowed per thread; one more `enqueue` is RESOURCE_EXHAUSTED/QUEUE_FULL",
        metavar="N",
    )
    max_attempts: int = option(
        3,
        "attempts of a run cut off by a crash or stop before it ends ERROR (MaxAttemptsExceeded)",
        metavar="N",
    )
    run_timeout_seconds: float = option(
        3600.0,
        "time limit of a run's attempt unless the run sets `timeout_seconds`; 0 = none."
        " Over it: run TIMEOUT, thread ERROR",
        metavar="S",
    )
    durability: str = option(
        "sync",
        "when the checkpoints of a run that does not set `durability` are written: each step's"
        " before the next step (sync), while the next step runs (async), or when the run ends"
        " (exit)",
        choices=DURABILITIES,
        run_field="durability",
    )
    on_pending_interrupt: str = option(
        "discard",
        "what new input does on a thread waiting for a human's answer, for runs that do not set"
        " `on_pending_interrupt`: start over from START recording the interrupt ids it"
        " discards (discard, LangGraph's behaviour), or refuse the run with AWAITING_INPUT"
        " (reject)",
        choices=ON_PENDING_INTERRUPT,
        run_field="on_pending_interrupt",
    )
    close_tool_calls: str = option(
        "on",
        "when a run is interrupted, close each AI tool call it left without a result with a tool"
        " message saying it was cancelled, in the run's last checkpoint (on), or leave them"
        " (off); for runs that do not set `close_tool_calls` (LangGraph graphs)",
        choices=("on", "off"),
    )
    stream_retain_seconds: float = option(
        600.0, "keep a run's events this long after it ends", metavar="S"
    )
    stream_max_events: int = option(
        100_000, "events kept per run (and per watched thread)", metavar="N"
    )
    stream_max_bytes: int = option(64 << 20, "encoded bytes of events kept per run", flag=None)
    stream_retained_bytes: int = option(256 << 20, "bytes over all ended runs' events", flag=None)
    subscriber_max_lag: int = option(
        10_000,
        "events a live subscriber may fall behind; below the stream's max events",
        metavar="N",
    )
    max_message_bytes: int = option(
        1024 * 1024,
        "largest request accepted; a larger one gets RESOURCE_EXHAUSTED from gRPC",
        metavar="N",
    )
    max_page_bytes: int = option(
        4 << 20, "bytes a list answer may carry; a page stops before the entry past it", flag=None
    )
    max_state_bytes: int = option(
        16 << 20,
        "largest a thread's state may grow, in bytes: a native thread's values as answers"
        " encode them, a LangGraph thread's channels as stored. A graph's step past it ends"
        " its run ERROR (StateTooLarge) and UpdateThreadState past it is RESOURCE_EXHAUSTED"
        " STATE_TOO_LARGE, before anything of it is stored; at most half of `max_answer_bytes`,"
        " so that every answer carrying a state fits",
        metavar="N",
    )
    max_answer_bytes: int = option(
        MAX_ANSWER_BYTES,
        "largest message the server sends (gRPC's send limit; the SDK receives 64 MiB, other"
        " gRPC clients 4 MiB unless told more). A thread stored larger than an answer can carry"
        " (before `max_state_bytes` held it) is refused by GetThread and GetThreadState with"
        " RESOURCE_EXHAUSTED STATE_TOO_LARGE and left out of list pages, with a warning",
        flag=None,
    )
    redis: str = option(
        "",
        "Redis (`redis://host:port/db`) relaying each run's events to the streams of every"
        " replica (Redis Streams, one per run and per thread); needed by replicas sharing a"
        " PostgreSQL database: without it, one replica alone",
        metavar="URL",
        parse=_redis_url,
    )
    redis_key_prefix: str = option(
        "turnstile:",
        "the prefix of every Redis key this server writes (deployments sharing a Redis keep"
        " apart by it)",
        metavar="PREFIX",
    )
    redis_stream_max_events: int = option(
        10_000,
        "events Redis keeps per run stream (and per thread stream), trimmed oldest first;"
        " a subscriber asking for trimmed events gets STREAM_EXPIRED",
        metavar="N",
    )
    redis_stream_ttl_seconds: float = option(
        3600.0,
        "how long Redis keeps a run's (or thread's) events after its last one",
        metavar="S",
    )
    replica_name: str = option(
        "",
        "PostgreSQL: this replica's name in the log, the metrics and the `replicas` table"
        " (default HOST:PID)",
        metavar="NAME",
    )
    lease_ttl_seconds: float = option(
        10.0,
        "PostgreSQL: how long a replica's lease lasts on the database's clock. A replica that"
        " cannot renew it in time stops its runs; other replicas resume them once it expired"
        " (so a replica cut off delays its runs, and their successors, by up to this long)",
        metavar="S",
    )
    lease_beat_seconds: float = option(
        2.0,
        "PostgreSQL: how often a replica renews its lease, learns of cancellations it missed,"
        " sweeps expired leases and polls for runs to claim; at most a third of the lease",
        metavar="S",
    )
    shutdown_grace_seconds: float = option(
        10.0,
        "on SIGTERM/SIGINT, how long running runs may go on before they are stopped",
        metavar="S",
    )
    # Never a flag: other users can read a process's arguments.
    api_keys: list[str] = field(
        default_factory=list,
        repr=False,
        metadata={OPTION: Option("accept only calls with one of these keys", None)},
    )
    api_keys_file: str = option(
        "",
        "accept only calls with one of these keys, one per line (or TURNSTILE_API_KEYS);"
        " keys are never taken as flags. Without keys every caller is let in",
        metavar="PATH",
    )
    tls_cert: str = option(
        "", "serve TLS with this certificate (and --tls-key); without, plaintext", metavar="PEM"
    )
    tls_key: str = option("", "the TLS certificate's key", metavar="PEM")
    tls_client_ca: str = option(
        "", "mutual TLS: require client certificates from this CA", metavar="PEM"
    )
    metrics_port: int = option(
        -1,
        "serve Prometheus metrics at http://HOST:PORT/metrics on the server's host; 0 = any"
        " free port (the log says which: `metrics on 127.0.0.1:PORT`), -1 = off",
        metavar="PORT",
    )
    log_level: str = option("INFO", "logging level")
    log_format: str = option("text", "text lines, or one JSON object per line", choices=LOG_FORMATS)

    @property
    def address(self) -> str:
        """The `host:port` to bind."""
        return f"{self.host}:{self.port}"

    def run_defaults(self) -> dict[str, Any]:
        """The server's defaults of run options, by option name (`Option.run_field`)."""
        return {
            declared.run_field: getattr(self, setting.name)
            for setting in fields(self)
            if (declared := setting.metadata[OPTION]).run_field
        }

    def stream_limits(self) -> StreamLimits:
        """The event logs' retention and the subscribers' lag bound."""
        return StreamLimits(
            retain_seconds=self.stream_retain_seconds,
            max_events=self.stream_max_events,
            max_bytes=self.stream_max_bytes,
            retained_bytes=self.stream_retained_bytes,
            max_lag=self.subscriber_max_lag,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Reads `TURNSTILE_<FIELD>` variables (e.g. `TURNSTILE_MAX_RUNNING`) over the defaults;
        list fields (`TURNSTILE_GRAPHS`, `TURNSTILE_API_KEYS`) are comma-separated."""
        env = os.environ if environ is None else environ
        config = cls()
        for setting in fields(cls):
            name = env_name(setting)
            if name not in env:
                continue
            raw = env[name]
            default = default_of(setting)
            if isinstance(default, list):
                value: object = [item.strip() for item in raw.split(",") if item.strip()]
            else:
                try:
                    value = parser_of(setting)(raw)
                except ValueError as exc:
                    if setting.metadata[OPTION].parse is not None:
                        raise ValueError(f"{name}={raw!r}: {exc}") from None
                    raise ValueError(
                        f"{name}={raw!r} is not a valid {type(default).__name__}"
                    ) from None
            setattr(config, setting.name, value)
        config.check()
        return config

    def check(self) -> None:
        """Raises ValueError for a setting out of range or inconsistent."""
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("mutual TLS (--tls-client-ca) needs TLS (--tls-cert, --tls-key)")
        if self.max_running < 1 or self.max_queued < 0 or self.max_attempts < 1:
            raise ValueError(
                "max_running and max_attempts must be at least 1, max_queued at least 0"
            )
        if not 0 <= self.graph_threads <= 64:
            raise ValueError("graph_threads must be between 0 (the API's loop) and 64")
        if not 0 <= self.switch_interval_ms <= 100:
            raise ValueError("switch_interval_ms must be between 0 (Python's own) and 100")
        if not 1024 <= self.max_message_bytes <= 64 << 20:
            raise ValueError("max_message_bytes must be between 1 KiB and 64 MiB")
        if not 64 << 10 <= self.max_answer_bytes <= MAX_ANSWER_BYTES:
            raise ValueError("max_answer_bytes must be between 64 KiB and 64 MiB")
        if not 1024 <= self.max_page_bytes <= self.max_answer_bytes // 2:
            raise ValueError(
                "max_page_bytes must be at least 1 KiB and at most half of max_answer_bytes"
            )
        if not 1024 <= self.max_state_bytes <= self.max_answer_bytes // 2:
            raise ValueError(
                "max_state_bytes must be at least 1 KiB and at most half of max_answer_bytes"
                " (32 MiB by default)"
            )
        if self.durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}")
        if self.close_tool_calls not in ("on", "off"):
            raise ValueError("close_tool_calls must be on or off")
        if self.on_pending_interrupt not in ON_PENDING_INTERRUPT:
            raise ValueError(
                f"on_pending_interrupt must be one of {', '.join(ON_PENDING_INTERRUPT)}"
            )
        if not 0 <= self.run_timeout_seconds <= 366 * 24 * 3600:
            raise ValueError("run_timeout_seconds must be between 0 (no limit) and a year")
        if not 0.1 <= self.lease_ttl_seconds <= 3600:
            raise ValueError("lease_ttl_seconds must be between 0.1 s and an hour")
        if not 0 < self.lease_beat_seconds * 3 <= self.lease_ttl_seconds:
            raise ValueError("lease_beat_seconds must be above 0 and at most a third of the lease")
        if not 0 <= self.shutdown_grace_seconds <= 3600:
            raise ValueError("shutdown_grace_seconds must be between 0 and an hour")
        if not 0 <= self.stream_retain_seconds <= 7 * 24 * 3600:
            raise ValueError("stream_retain_seconds must be between 0 and a week")
        if self.stream_max_events < 1 or self.stream_max_bytes < 1:
            raise ValueError("stream_max_events and stream_max_bytes must be at least 1")
        if self.redis_stream_max_events < 1 or not 1 <= self.redis_stream_ttl_seconds <= 30 * 86400:
            raise ValueError(
                "redis_stream_max_events must be at least 1, redis_stream_ttl_seconds between"
                " 1 s and 30 days"
            )
        if not -1 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be a port, 0 for any free one, or -1 for none")
        if self.log_format not in LOG_FORMATS:
            raise ValueError("log_format must be text or json")
        if not 1 <= self.subscriber_max_lag < self.stream_max_events:
            raise ValueError(
                "subscriber_max_lag must be at least 1 and below stream_max_events, so that a"
                " subscriber ended as too slow can still resume"
            )
