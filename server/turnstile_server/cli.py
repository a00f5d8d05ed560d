"""`turnstile serve`: runs the server (`python -m turnstile_server.cli serve`); `turnstile
migrate` applies the database schema without serving.

The `turnstile` console script (`turnstile_tools.cli`) adds this command beside its tools.
Its flags are generated from the option declarations in `turnstile_server.config`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from typing import TypeAlias

from turnstile_server.config import ServerConfig
from turnstile_server.errors import TurnstileError
from turnstile_server.logs import configured as logs_configured
from turnstile_server.options import add_arguments, config_from

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_serve_command(commands: Subcommands) -> None:
    """Adds `serve` to a command's subcommands; its defaults come from the environment, so a
    malformed variable raises ValueError here."""
    add_arguments(commands.add_parser("serve", help="run the server"), ServerConfig.from_env())


def add_migrate_command(commands: Subcommands) -> None:
    """Adds `migrate` to a command's subcommands: `--database` as `serve` takes it."""
    migrate_parser = commands.add_parser(
        "migrate", help="apply the database schema's migrations without serving"
    )
    migrate_parser.add_argument(
        "--database",
        default=os.environ.get("TURNSTILE_DATABASE", ServerConfig().database),
        help="the database, as `serve --database` takes it (env TURNSTILE_DATABASE)",
    )


def migrate(args: argparse.Namespace) -> int:
    """Runs a parsed `migrate` command; returns the exit status."""
    from turnstile_server.store.url import migrate_database, parse_database_url

    try:
        parse_database_url(args.database)
        with logs_configured("info", "text"):
            version = asyncio.run(migrate_database(args.database))
    except (OSError, ValueError, RuntimeError, TurnstileError) as exc:
        print(f"turnstile: {exc}", file=sys.stderr)
        return 1
    print(f"turnstile: the database is at schema version {version}")
    return 0


def _collect_less() -> None:
    """Tunes the server process's garbage collector: what is loaded by now (modules, protobuf
    descriptors: about 35,000 objects) is never walked again, and a young collection runs
    every 7,000 allocations rather than 700, so fewer objects age into full collections.
    Under B2 it saved 5% of the event loop's time per run and every full collection."""
    gc.freeze()
    gc.set_threshold(7_000, 10, 10)


def _importable_here() -> None:
    """Makes the modules of the current directory importable, as `python -m` does: the
    `turnstile` console script puts only its own directory on `sys.path`, so a `--graph
    name=mygraphs.module:attribute` next to where the command runs would not import. At the
    end of the path, as `langgraph dev` adds its directory: installed packages keep their
    names."""
    here = os.getcwd()
    if "" not in sys.path and here not in sys.path:
        sys.path.append(here)


def serve(args: argparse.Namespace) -> int:
    """Runs a parsed `serve` command until it is stopped; returns the exit status."""
    from turnstile_server.app import serve as serving
    from turnstile_server.replica import DeploymentMismatch

    _importable_here()
    try:
        config = config_from(args)
        with logs_configured(config.log_level, config.log_format):  # written before the error
            config.check()
            _collect_less()
            asyncio.run(serving(config))
    except DeploymentMismatch as exc:  # this replica's options contradict its peers'
        print(f"turnstile: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TurnstileError) as exc:
        print(f"turnstile: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m turnstile_server.cli serve|migrate ...`, the server alone."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="turnstile", description=__doc__)
    try:
        commands = parser.add_subparsers(dest="command", required=True)
        add_serve_command(commands)
        add_migrate_command(commands)
    except ValueError as exc:
        print(f"turnstile: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    return migrate(args) if args.command == "migrate" else serve(args)


if __name__ == "__main__":
    sys.exit(main())
