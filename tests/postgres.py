"""PostgreSQL for tests: a database of its own per test, created and dropped around it.

The server to use is `TURNSTILE_TEST_POSTGRES_URL` (a database to connect to for CREATE and
DROP DATABASE); unset, it is the local server every development and CI machine runs
(`DEFAULT_URL`), and set to the empty string it skips the PostgreSQL tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ENV = "TURNSTILE_TEST_POSTGRES_URL"


def server_url() -> str:
    """The server's URL, or a skip when the tests were told to do without PostgreSQL."""
    url = os.environ.get(ENV, DEFAULT_URL)
    if not url:
        pytest.skip(f"{ENV} is empty: no PostgreSQL for this run")
    return url


def with_database(url: str, name: str) -> str:
    """`url` naming database `name` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def database() -> AsyncIterator[str]:
    """A new empty database `turnstile_test_<random>`, dropped afterwards; yields its URL."""
    url = server_url()
    name = f"turnstile_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(url, name)
    finally:
        admin = await asyncpg.connect(url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
