"""`turnstile threads ...` and `turnstile runs ...`: look into and steer a running server.

Tables for people, `--json` for scripts (the SDK's dicts as they are). A failed call prints
one line, `turnstile: <CODE> <reason>: <message>`, and exits 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeAlias, get_args

from turnstile import (
    CancelAction,
    RunStatus,
    StreamPart,
    SyncTurnstileClient,
    ThreadStatus,
    ThreadStreamPart,
    TurnstileError,
    get_sync_client,
)
from turnstile_server.config import DEFAULT_HOST, DEFAULT_PORT
from turnstile_tools.operator_display import (
    MAX_CELL,
    compact,
    event_summary,
    record,
    run_record,
    state_text,
    table,
    value_text,
    values_summary,
    when,
)

DEFAULT_ADDRESS: Final = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
"""Where `serve` listens by default."""

Handler: TypeAlias = Callable[[SyncTurnstileClient, argparse.Namespace], None]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_commands(commands: Subcommands) -> None:
    """Adds `threads` and `runs` to the `turnstile` command's subcommands."""
    common = _connection_options()
    threads = commands.add_parser("threads", help="list and inspect threads on a server")
    actions = threads.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _leaf(actions, "list", "list threads, newest first", common, _threads_list)
    listing.add_argument("--status", choices=get_args(ThreadStatus), help="only this status")
    listing.add_argument(
        "--metadata",
        action="append",
        type=_pair,
        default=[],
        metavar="KEY=VALUE",
        help="only threads whose metadata has KEY=VALUE (VALUE as JSON, else a string); repeatable",
    )
    _paging(listing)
    _leaf(actions, "get", "show one thread", common, _threads_get).add_argument("thread_id")
    state = _leaf(actions, "state", "show a thread's current values", common, _threads_state)
    state.add_argument("thread_id")

    runs = commands.add_parser("runs", help="list, inspect, cancel and watch runs on a server")
    actions = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _leaf(actions, "list", "list a thread's runs, newest first", common, _runs_list)
    listing.add_argument("thread_id")
    listing.add_argument("--status", choices=get_args(RunStatus), help="only this status")
    _paging(listing)
    get = _leaf(actions, "get", "show one run", common, _runs_get)
    get.add_argument("thread_id")
    get.add_argument("run_id")
    cancel = _leaf(actions, "cancel", "cancel a pending or running run", common, _runs_cancel)
    cancel.add_argument("thread_id")
    cancel.add_argument("run_id")
    cancel.add_argument(
        "--action",
        choices=get_args(CancelAction),
        default="interrupt",
        help="interrupt keeps its completed steps; rollback deletes the run and its"
        " checkpoints (default: interrupt)",
    )
    cancel.add_argument("--wait", action="store_true", help="return once the run has stopped")
    watch = _leaf(
        actions,
        "watch",
        "print a run's events until its end, or with no RUN_ID every run's events on the"
        " thread until Ctrl-C",
        common,
        _runs_watch,
    )
    watch.add_argument("thread_id")
    watch.add_argument("run_id", nargs="?")
    watch.add_argument(
        "--after-seq", type=_count, default=0, metavar="N", help="start after event N (resume)"
    )


def run(args: argparse.Namespace) -> int:
    """Runs a parsed `threads` or `runs` command; returns the exit status."""
    try:
        client = _connect(args)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
        return 1
    try:
        with client:
            handler: Handler = args.handler
            handler(client, args)
    except TurnstileError as exc:
        _fail(error_line(exc, args.address))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`); say nothing more, not even at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0


def error_line(exc: TurnstileError, address: str) -> str:
    """The one line a failed call prints: `<CODE> <reason>: <message>`."""
    code = getattr(exc.code, "name", str(exc.code))
    message = " ".join(exc.message.split())
    if not exc.reason and code == "UNAVAILABLE":
        message = f"cannot reach the server at {address}: {message}"
    return f"{code} {exc.reason}: {message}" if exc.reason else f"{code}: {message}"


# --- options ---------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=os.environ.get("TURNSTILE_ADDRESS") or DEFAULT_ADDRESS,
        help="server as host:port, http://host:port or https://host:port"
        f" (TURNSTILE_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    common.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="file holding the API key; else TURNSTILE_API_KEY (keys are never taken as flags)",
    )
    common.add_argument("--tls-ca", metavar="PEM", help="trust this CA (turns TLS on)")
    common.add_argument("--tls-cert", metavar="PEM", help="mutual TLS: this client certificate")
    common.add_argument("--tls-key", metavar="PEM", help="mutual TLS: its key")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return common


def _leaf(
    actions: Subcommands, name: str, help: str, common: argparse.ArgumentParser, handler: Handler
) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help, description=help, parents=[common])
    parser.set_defaults(handler=handler)
    return parser


def _paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_count, default=20, help="at most N (default 20)")
    parser.add_argument("--offset", type=_count, default=0, help="skip the first N")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _connect(args: argparse.Namespace) -> SyncTurnstileClient:
    if args.api_key_file:
        api_key: str | None = Path(args.api_key_file).read_text().strip()
    else:
        api_key = os.environ.get("TURNSTILE_API_KEY") or None

    def pem(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    return get_sync_client(
        args.address,
        api_key=api_key,
        root_certificates=pem(args.tls_ca),
        client_certificate=pem(args.tls_cert),
        client_key=pem(args.tls_key),
    )


def _fail(message: str) -> None:
    print(f"turnstile: {message}", file=sys.stderr)


def _show(args: argparse.Namespace, data: Any, render: Callable[[], str]) -> None:
    print(json.dumps(data, indent=2) if args.json else render())


# --- commands --------------------------------------------------------------------------


def _threads_list(client: SyncTurnstileClient, args: argparse.Namespace) -> None:
    metadata = dict(args.metadata) or None
    threads = client.threads.search(
        status=args.status, metadata=metadata, limit=args.limit, offset=args.offset
    )
    rows = [
        (t["thread_id"], t["status"], when(t["update_time"]), compact(t["metadata"], MAX_CELL))
        for t in threads
    ]
    _show(args, threads, lambda: table(("THREAD_ID", "STATUS", "UPDATED", "METADATA"), rows))


def _threads_get(client: SyncTurnstileClient, args: argparse.Namespace) -> None:
    thread = client.threads.get(args.thread_id)
    fields = [
        ("thread_id", thread["thread_id"]),
        ("status", thread["status"]),
        ("created", when(thread["create_time"])),
        ("updated", when(thread["update_time"])),
        ("metadata", compact(thread["metadata"])),
        ("values", values_summary(thread["values"])),
    ]
    _show(args, thread, lambda: record(fields))


def _threads_state(client: SyncTurnstileClient, args: argparse.Namespace) -> None:
    state = client.threads.get_state(args.thread_id)
    _show(args, state, lambda: state_text(state))


def _runs_list(client: SyncTurnstileClient, args: argparse.Namespace) -> None:
    runs = client.runs.list(
        args.thread_id, status=args.status, limit=args.limit, offset=args.offset
    )
    rows = [
        (
            r["run_id"],
            r["status"],
            r["multitask_strategy"],
            when(r["create_time"]),
            str(r["attempt"]),
            value_text(r["queue_position"]),
            r["assistant_id"],
        )
        for r in runs
    ]
    headers = ("RUN_ID", "STATUS", "STRATEGY", "CREATED", "ATTEMPT", "QUEUE", "ASSISTANT")
    _show(args, runs, lambda: table(headers, rows))


def _runs_get(client: SyncTurnstileClient, args: argparse.Namespace) -> None:
    found = client.runs.get(args.thread_id, args.run_id)
    _show(args, found, lambda: run_record(found))


def _runs_cancel(client: SyncTurnstileClient, args: argparse.Namespace) -> None:
    cancelled = client.runs.cancel(args.thread_id, args.run_id, wait=args.wait, action=args.action)
    _show(args, cancelled, lambda: run_record(cancelled))


def _runs_watch(client: SyncTurnstileClient, args: argparse.Namespace) -> None:
    # Not `with stream`: after Ctrl-C the cancelled read may still be unwinding on the
    # client's loop, and closing the stream then fails; closing the client ends the call.
    if args.run_id:
        for part in client.runs.join_stream(args.thread_id, args.run_id, after_seq=args.after_seq):
            _print_event(args, part)
    else:
        for thread_part in client.threads.watch(args.thread_id, after_seq=args.after_seq):
            _print_event(args, thread_part)


def _print_event(args: argparse.Namespace, part: StreamPart | ThreadStreamPart) -> None:
    if args.json:
        fields: dict[str, Any] = {"seq": part.seq}
        if isinstance(part, ThreadStreamPart):
            fields |= {"run_id": part.run_id, "run_seq": part.run_seq}
        line = json.dumps(fields | {"event": part.event, "data": part.data})
    else:
        run_column = f"{part.run_id[:8]}  " if isinstance(part, ThreadStreamPart) else ""
        line = (
            f"{part.seq:>5}  {run_column}{part.event:<11}  {event_summary(part.event, part.data)}"
        )
    print(line.rstrip(), flush=True)


def _pair(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw
