"""The PostgreSQL backend of the storage interface: asyncpg, a connection pool, migrations."""

from turnstile_server.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
