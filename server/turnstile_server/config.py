"""Server configuration: defaults, then environment variables, then command-line flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

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
    retain_seconds: float = 600.0
    max_message_bytes: int = 1024 * 1024
    shutdown_grace_seconds: float = 5.0

    @property
    def address(self) -> str:
        """The `host:port` to bind."""
        return f"{self.host}:{self.port}"

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
        return config
