"""Run transitions, counted for Prometheus and logged: the scheduler calls one hook per transition.

Every hook logs one line with the run's `thread_id` and `run_id` (logger
`turnstile_server.metrics`); with metrics enabled it also updates this server's own
`CollectorRegistry`, which `serve` exposes over HTTP. Disabled, a hook only logs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from turnstile_server.store import RunRecord, RunSpec

log = logging.getLogger(__name__)

# Seconds: from a fast RPC (sub-millisecond) to a run that queues or unwinds for minutes.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_MESSAGES = {
    "interrupted": "run interrupted",
    "rolled_back": "run rolled back",
    "deleted": "run deleted with its thread",
}


class _Instruments:
    """The registry and what is measured in it."""

    def __init__(self, executing: set[str], queued: set[str]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.admitted = Counter(
            "turnstile_runs_admitted", "Runs admitted.", ["strategy"], registry=r
        )
        self.refused = Counter(
            "turnstile_runs_refused",
            "Runs refused at admission, by error reason.",
            ["strategy", "reason"],
            registry=r,
        )
        self.finished = Counter(
            "turnstile_runs_finished",
            "Runs ended: success, error, timeout, interrupted, rolled_back or deleted.",
            ["strategy", "status"],
            registry=r,
        )
        Gauge(
            "turnstile_runs_executing", "Runs executing in this process.", registry=r
        ).set_function(lambda: len(executing))
        Gauge(
            "turnstile_runs_queued", "Runs pending (admitted, not started).", registry=r
        ).set_function(lambda: len(queued))
        self.queue_wait = Histogram(
            "turnstile_run_queue_wait_seconds",
            "From admission to the first start of a run.",
            ["strategy"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.cancel_to_stop = Histogram(
            "turnstile_run_cancel_to_stop_seconds",
            "From the cancellation of a running run to its task having unwound.",
            ["action"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.replica = Gauge(
            "turnstile_replica",
            "1 for this replica's name and current incarnation (PostgreSQL; none on SQLite).",
            ["replica", "incarnation"],
            registry=r,
        )
        self.rpc = Histogram(
            "turnstile_rpc_duration_seconds",
            "RPC handling time, to the end of the handler (of the stream, for streaming RPCs).",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=r,
        )


class Metrics:
    """The hooks the scheduler and the RPC interceptor call, and the `/metrics` endpoint."""

    def __init__(self, *, enabled: bool = False) -> None:
        # Run ids rather than counts: a hook called twice for one run cannot skew the gauges.
        self._executing: set[str] = set()
        self._queued: set[str] = set()
        self._cancelled: dict[str, tuple[float, str]] = {}  # run id -> (when, action)
        self._on = _Instruments(self._executing, self._queued) if enabled else None
        self._http: tuple[ThreadingWSGIServer, threading.Thread] | None = None
        self.port: int | None = None  # where `/metrics` is served

    @property
    def enabled(self) -> bool:
        """Whether metrics are collected (else the hooks only log)."""
        return self._on is not None

    @property
    def registry(self) -> CollectorRegistry | None:
        """This server's registry, None when disabled."""
        return self._on.registry if self._on else None

    def run_admitted(self, run: RunRecord) -> None:
        """A run was admitted (PENDING)."""
        log.info(
            "run admitted",
            extra={
                **_ids(run),
                "strategy": run.multitask_strategy,
                "queue_position": run.queue_position or 0,
            },
        )
        if self._on:
            self._on.admitted.labels(run.multitask_strategy).inc()
            self._queued.add(run.run_id)

    def run_refused(self, spec: RunSpec, reason: str) -> None:
        """Admission refused a run (`THREAD_BUSY`, `QUEUE_FULL`, ...)."""
        log.info(
            "run refused",
            extra={
                "thread_id": spec.thread_id,
                "strategy": spec.multitask_strategy,
                "reason": reason,
            },
        )
        if self._on:
            self._on.refused.labels(spec.multitask_strategy, reason).inc()

    def runs_recovered(self, pending: Iterable[str]) -> None:
        """The ids of the runs found PENDING in the store at start (queued before a restart,
        or requeued)."""
        if self._on:
            self._queued.update(pending)

    def pending_now(self, pending: Iterable[str]) -> None:
        """The ids of the runs PENDING in the database now (replicas: admitted anywhere), so
        the queued gauge does not keep runs another replica started."""
        if self._on:
            self._queued.clear()
            self._queued.update(pending)

    def replica(self, name: str, incarnation: str) -> None:
        """This replica's name and its incarnation since (re)joining."""
        log.info("replica %s is incarnation %s", name, incarnation)
        if self._on:
            self._on.replica.clear()
            self._on.replica.labels(name, incarnation).set(1)

    def run_started(self, run: RunRecord) -> None:
        """A run went RUNNING: its first attempt, or resumed after a restart."""
        message = "run started" if run.attempt <= 1 else "run resumed"
        log.info(
            message,
            extra={**_ids(run), "strategy": run.multitask_strategy, "attempt": run.attempt},
        )
        if self._on:
            self._queued.discard(run.run_id)
            self._executing.add(run.run_id)
            if run.attempt <= 1 and run.start_time is not None:
                wait = max(run.start_time - run.create_time, 0) / 1_000_000
                self._on.queue_wait.labels(run.multitask_strategy).observe(wait)

    def cancel_requested(self, run: RunRecord) -> None:
        """A running run is to stop (interrupted or rolled back, by a new run or a client)."""
        action = run.cancel_action or "interrupt"
        log.info(
            "run cancelling",
            extra={**_ids(run), "action": action, "reason": run.cancel_reason},
        )
        if self._on:
            self._cancelled.setdefault(run.run_id, (time.monotonic(), action))

    def run_stopped(self, run: RunRecord) -> None:
        """A run's task has unwound (it ended, was cancelled, or the server stopped)."""
        if self._on:
            self._executing.discard(run.run_id)
            cancelled = self._cancelled.pop(run.run_id, None)
            if cancelled is not None:
                since, action = cancelled
                self._on.cancel_to_stop.labels(action).observe(time.monotonic() - since)

    def run_finished(self, run: RunRecord, status: str) -> None:
        """A run ended with `status`: its own, `rolled_back` or `deleted` (with its thread)."""
        fields: dict[str, Any] = {
            **_ids(run),
            "strategy": run.multitask_strategy,
            "status": status,
            "attempt": run.attempt,
        }
        if run.cancel_reason:
            fields["reason"] = run.cancel_reason
        if run.superseded_by:
            fields["superseded_by"] = run.superseded_by
        if run.error:
            fields["error_type"] = run.error.type
            fields["reason"] = run.error.message
        log.info(_MESSAGES.get(status, "run finished"), extra=fields)
        if self._on:
            self._queued.discard(run.run_id)
            self._on.finished.labels(run.multitask_strategy, status).inc()

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        """An RPC's handler ended with status `code` after `seconds`."""
        if self._on:
            self._on.rpc.labels(method, code).observe(seconds)

    def serve(self, host: str, port: int) -> int:
        """Serves `/metrics` on `host:port` (0: a free port) from a thread; returns the port."""
        assert self._on is not None, "metrics are disabled"
        host = host.strip("[]")
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

        class Server(ThreadingWSGIServer):
            address_family = family

        server = make_server(
            host, port, make_wsgi_app(self._on.registry), Server, handler_class=_QuietHandler
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="metrics http",
            daemon=True,
        )
        thread.start()
        self._http = (server, thread)
        self.port = int(server.server_address[1])
        return self.port

    async def close(self) -> None:
        """Stops serving `/metrics`."""
        if self._http is None:
            return
        server, thread = self._http
        self._http = None

        def shut() -> None:
            server.shutdown()
            server.server_close()
            thread.join()

        await asyncio.to_thread(shut)


class _QuietHandler(WSGIRequestHandler):
    """Logs no line per scrape (the default handler writes one to stderr)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _ids(run: RunRecord) -> dict[str, Any]:
    return {"thread_id": run.thread_id, "run_id": run.run_id}
