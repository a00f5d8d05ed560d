"""Server configuration: defaults, then environment variables, then command-line flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from turnstile_server.event_log import StreamLimits
from turnstile_server.store.records import DURABILITIES

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
    durability: str = "sync"  # when a run's checkpoints are written, unless the run says
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
    metrics_port: int = -1  # -1: no metrics endpoint; 0: any free port
    log_format: str = "text"

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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Reads `TURNSTILE_<FIELD>` variables (e.g. `TURNSTILE_MAX_RUNNING`) over the defaults;
        list fields (`TURNSTILE_GRAPHS`, `TURNSTILE_API_KEYS`) are comma-separated."""
        env = os.environ if environ is None else environ
        config = cls()
        for setting in fields(cls):
            name = f"TURNSTILE_{setting.name.upper()}"
            if name not in env:
                continue
            raw = env[name]
            default = getattr(config, setting.name)
            if isinstance(default, list):
                value: object = [item.strip() for item in raw.split(",") if item.strip()]
            else:
                try:
                    value = type(default)(raw)
                except ValueError:
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
        if not 1024 <= self.max_message_bytes <= 64 << 20:
            raise ValueError("max_message_bytes must be between 1 KiB and 64 MiB")
        if self.durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {', '.join(DURABILITIES)}")
        if not 0 <= self.run_timeout_seconds <= 366 * 24 * 3600:
            raise ValueError("run_timeout_seconds must be between 0 (no limit) and a year")
        if not 0 <= self.shutdown_grace_seconds <= 3600:
            raise ValueError("shutdown_grace_seconds must be between 0 and an hour")
        if not 0 <= self.stream_retain_seconds <= 7 * 24 * 3600:
            raise ValueError("stream_retain_seconds must be between 0 and a week")
        if self.stream_max_events < 1 or self.stream_max_bytes < 1:
            raise ValueError("stream_max_events and stream_max_bytes must be at least 1")
        if not -1 <= self.metrics_port <= 65535:
            raise ValueError("metrics_port must be a port, 0 for any free one, or -1 for none")
        if self.log_format not in ("text", "json"):
            raise ValueError("log_format must be text or json")
        if not 1 <= self.subscriber_max_lag < self.stream_max_events:
            raise ValueError(
                "subscriber_max_lag must be at least 1 and below stream_max_events, so that a"
                " subscriber ended as too slow can still resume"
            )
