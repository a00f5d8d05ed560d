"""Server configuration: defaults, then environment variables, then command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from turnstile_server.events import StreamLimits

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50051


@dataclass(slots=True)
class ServerConfig:
    """Everything the app needs to start a server."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database: str = "turnstile.db"
    graphs: list[str] = field(default_factory=list)
    max_running: int = 64
    max_queued: int = 100
    max_attempts: int = 3
    run_timeout_seconds: float = 3600.0
    stream_retain_seconds: float = 600.0
    stream_max_events: int = 100_000
    stream_max_bytes: int = 64 << 20
    stream_retained_bytes: int = 256 << 20
    subscriber_max_lag: int = 10_000
    max_message_bytes: int = 1024 * 1024
    shutdown_grace_seconds: float = 10.0
    api_keys: list[str] = field(default_factory=list, repr=False)
    api_keys_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""

    @property
    def address(self) -> str:
        """The `host:port` to bind."""
        return f"{self.host}:{self.port}"

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
    def from_env(cls, environ: dict[str, str] | None = None) -> ServerConfig:
        """Reads `TURNSTILE_*` variables over the defaults."""
        env = os.environ if environ is None else environ
        config = cls()
        config.host = env.get("TURNSTILE_HOST", config.host)
        config.port = int(env.get("TURNSTILE_PORT", config.port))
        config.database = env.get("TURNSTILE_DATABASE", config.database)
        graphs = env.get("TURNSTILE_GRAPHS", "")
        config.graphs = [g.strip() for g in graphs.split(",") if g.strip()]
        config.max_running = int(env.get("TURNSTILE_MAX_RUNNING", config.max_running))
        config.max_queued = int(env.get("TURNSTILE_MAX_QUEUED", config.max_queued))
        config.max_message_bytes = int(
            env.get("TURNSTILE_MAX_MESSAGE_BYTES", config.max_message_bytes)
        )
        config.max_attempts = int(env.get("TURNSTILE_MAX_ATTEMPTS", config.max_attempts))
        config.run_timeout_seconds = float(
            env.get("TURNSTILE_RUN_TIMEOUT_SECONDS", config.run_timeout_seconds)
        )
        config.shutdown_grace_seconds = float(
            env.get("TURNSTILE_SHUTDOWN_GRACE_SECONDS", config.shutdown_grace_seconds)
        )
        config.stream_retain_seconds = float(
            env.get("TURNSTILE_STREAM_RETAIN_SECONDS", config.stream_retain_seconds)
        )
        config.stream_max_events = int(
            env.get("TURNSTILE_STREAM_MAX_EVENTS", config.stream_max_events)
        )
        config.stream_max_bytes = int(
            env.get("TURNSTILE_STREAM_MAX_BYTES", config.stream_max_bytes)
        )
        config.stream_retained_bytes = int(
            env.get("TURNSTILE_STREAM_RETAINED_BYTES", config.stream_retained_bytes)
        )
        config.subscriber_max_lag = int(
            env.get("TURNSTILE_SUBSCRIBER_MAX_LAG", config.subscriber_max_lag)
        )
        keys = env.get("TURNSTILE_API_KEYS", "")
        config.api_keys = [k.strip() for k in keys.split(",") if k.strip()]
        config.api_keys_file = env.get("TURNSTILE_API_KEYS_FILE", "")
        config.tls_cert = env.get("TURNSTILE_TLS_CERT", "")
        config.tls_key = env.get("TURNSTILE_TLS_KEY", "")
        config.tls_client_ca = env.get("TURNSTILE_TLS_CLIENT_CA", "")
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
        if not 1024 <= self.max_message_bytes <= 64 << 20:
            raise ValueError("max_message_bytes must be between 1 KiB and 64 MiB")
        if not 0 <= self.run_timeout_seconds <= 366 * 24 * 3600:
            raise ValueError("run_timeout_seconds must be between 0 (no limit) and a year")
        if not 0 <= self.shutdown_grace_seconds <= 3600:
            raise ValueError("shutdown_grace_seconds must be between 0 and an hour")
        if not 0 <= self.stream_retain_seconds <= 7 * 24 * 3600:
            raise ValueError("stream_retain_seconds must be between 0 and a week")
        if self.stream_max_events < 1 or self.stream_max_bytes < 1:
            raise ValueError("stream_max_events and stream_max_bytes must be at least 1")
        if not 1 <= self.subscriber_max_lag < self.stream_max_events:
            raise ValueError(
                "subscriber_max_lag must be at least 1 and below stream_max_events, so that a"
                " subscriber ended as too slow can still resume"
            )
