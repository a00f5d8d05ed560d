"""The `turnstile` command: `serve` runs the server, `migrate` applies the database schema,
`demo` shows the four strategies.

`bench` measures the server against a raw gRPC echo server (`turnstile_tools.bench`).
`threads` and `runs` inspect a running server (`turnstile_tools.operator_cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from turnstile_server import cli as server_cli
from turnstile_tools import operator_cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnstile", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    server_cli.add_serve_command(commands)
    server_cli.add_migrate_command(commands)
    demo = commands.add_parser("demo", help="show the four multitask strategies")
    demo.add_argument("--step-seconds", type=float, default=0.8, help="simulated model latency")
    # Parsed by the bench itself (see `turnstile bench --help`); listed here for `--help`.
    commands.add_parser(
        "bench", help="measure the server against a raw gRPC echo server", add_help=False
    )
    operator_cli.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `turnstile` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from turnstile_tools.bench import main as bench

        return bench(argv[1:], prog="turnstile bench")
    try:
        parser = _parser()  # its defaults come from the environment
    except ValueError as exc:
        print(f"turnstile: {exc}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if args.command == "serve":
        return server_cli.serve(args)
    if args.command == "migrate":
        return server_cli.migrate(args)
    if args.command in ("threads", "runs"):
        return operator_cli.run(args)
    from turnstile_tools.demo import run_demo

    asyncio.run(run_demo(step_seconds=args.step_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
