"""`--database` picks the backend: sqlite:///path or a bare path, or postgresql://...;
`turnstile migrate` applies a database's schema without serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests import postgres
from turnstile_server.store import DatabaseUrlError, open_store, parse_database_url
from turnstile_server.store.postgres.schema import MIGRATIONS


@pytest.mark.parametrize(
    ("text", "backend", "path"),
    [
        ("turnstile.db", "sqlite", "turnstile.db"),
        ("/var/lib/turnstile/t.db", "sqlite", "/var/lib/turnstile/t.db"),
        ("sqlite:///data/t.db", "sqlite", "data/t.db"),
        ("sqlite:////var/lib/t.db", "sqlite", "/var/lib/t.db"),
        ("SQLITE:///t.db", "sqlite", "t.db"),
        ("postgresql://user@db/turnstile", "postgresql", ""),
        ("postgres://db/turnstile", "postgresql", ""),
    ],
)
def test_database_urls_name_their_backend(text: str, backend: str, path: str) -> None:
    parsed = parse_database_url(text)
    assert (parsed.backend, parsed.path, parsed.url) == (backend, path, text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("mysql://db/t", "unknown database scheme 'mysql'"),
        ("redis://localhost", "unknown database scheme 'redis'"),
        ("sqlite://t.db", "three slashes"),
        ("sqlite:///", "three slashes"),
        ("", "empty"),
    ],
)
def test_other_database_urls_are_refused_with_what_to_give(text: str, says: str) -> None:
    with pytest.raises(DatabaseUrlError, match=says):
        parse_database_url(text)


async def test_a_sqlite_url_opens_that_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///relative.db")
    await store.threads.create("t", {})
    await store.close()
    bare = await open_store(str(tmp_path / "relative.db"))
    try:
        assert (await bare.threads.get("t")).thread_id == "t"
    finally:
        await bare.close()


async def test_a_postgresql_url_opens_that_database() -> None:
    async with postgres.database() as url:
        store = await open_store(url)
        try:
            await store.threads.create("t", {})
        finally:
            await store.close()
        again = await open_store(url)
        try:
            assert (await again.threads.get("t")).thread_id == "t"
        finally:
            await again.close()


def test_serve_exits_2_on_an_unknown_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    from turnstile_server.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "0", "--database", "mongodb://db/t"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --database: unknown database scheme 'mongodb'" in err
    assert "sqlite:///path/to.db" in err


def test_serve_says_which_postgresql_server_it_cannot_reach_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from turnstile_server.cli import main

    unreachable = "postgresql://someone:s3cret@127.0.0.1:1/t"
    assert main(["serve", "--port", "0", "--database", unreachable]) == 1
    err = capsys.readouterr().err
    assert "cannot open the PostgreSQL database postgresql://someone:***@127.0.0.1:1/t" in err
    assert "s3cret" not in err and "Traceback" not in err


async def test_migrate_applies_the_schema_without_serving_and_again_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from turnstile_server.cli import main

    async with postgres.database() as url:
        for _ in range(2):
            code = await asyncio.to_thread(main, ["migrate", "--database", url])
            assert code == 0
            assert f"schema version {len(MIGRATIONS)}" in capsys.readouterr().out
        connection = await asyncpg.connect(url)
        try:
            versions = await connection.fetch("SELECT version FROM schema_migrations")
            tables = await connection.fetchval("SELECT to_regclass('runs')::text")
        finally:
            await connection.close()
        assert [row[0] for row in versions] == list(range(1, len(MIGRATIONS) + 1))
        assert tables == "runs"


def test_migrate_takes_a_sqlite_database_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from turnstile_server.cli import main

    assert main(["migrate", "--database", f"sqlite:///{tmp_path / 'm.db'}"]) == 0
    assert "schema version" in capsys.readouterr().out
    assert (tmp_path / "m.db").exists()
