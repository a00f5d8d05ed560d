"""The composition root: store, scheduler and gRPC server, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from turnstile.v1 import (
    assistant_service_pb2,
    assistant_service_pb2_grpc,
    run_service_pb2,
    run_service_pb2_grpc,
    thread_service_pb2,
    thread_service_pb2_grpc,
)
from turnstile_server.api.assistant_service import AssistantService
from turnstile_server.api.auth import ApiKeys, AuthInterceptor, read_keys
from turnstile_server.api.event_frames import EventFrames
from turnstile_server.api.rpc_errors import register
from turnstile_server.api.rpc_metrics import MetricsInterceptor
from turnstile_server.api.run_service import RunService
from turnstile_server.api.thread_service import ThreadService
from turnstile_server.config import ServerConfig
from turnstile_server.events import EventHub
from turnstile_server.graph import GraphRegistry, load_graph
from turnstile_server.langgraph_json import load_project, read_project
from turnstile_server.metrics import Metrics
from turnstile_server.replica import ReplicaLease
from turnstile_server.runner import Runner
from turnstile_server.runtime.graph_loops import GraphLoops
from turnstile_server.scheduler import Scheduler
from turnstile_server.store import Store, open_store

if TYPE_CHECKING:  # imported only with --redis: redis.asyncio takes about a second to import
    from turnstile_server.relay import Relay

log = logging.getLogger(__name__)

SERVICE_NAMES = [
    assistant_service_pb2.DESCRIPTOR.services_by_name["AssistantService"].full_name,
    thread_service_pb2.DESCRIPTOR.services_by_name["ThreadService"].full_name,
    run_service_pb2.DESCRIPTOR.services_by_name["RunService"].full_name,
]


class App:
    """A running Turnstile server."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        hub: EventHub,
        scheduler: Scheduler,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        port: int,
        metrics: Metrics,
        relay: Relay | None = None,
    ) -> None:
        self.config = config
        self.relay = relay
        self.store = store
        self.hub = hub
        self.scheduler = scheduler
        self.server = server
        self.health = health_servicer
        self.port = port
        self.metrics = metrics
        self.lease: ReplicaLease | None = None
        self.loops: GraphLoops | None = None

    @property
    def address(self) -> str:
        """The address clients connect to."""
        return f"{self.config.host}:{self.port}"

    @classmethod
    async def start(cls, config: ServerConfig, graphs: GraphRegistry | None = None) -> App:
        """Opens the store, starts the scheduler and serves on `config.address`; when a step
        fails, closes what the steps before it opened, last first."""
        async with contextlib.AsyncExitStack() as opened:
            app = await cls._start(config, graphs, opened)
            opened.pop_all()
        return app

    @classmethod
    async def _start(
        cls, config: ServerConfig, graphs: GraphRegistry | None, opened: contextlib.AsyncExitStack
    ) -> App:
        """The steps of `start`, each pushing onto `opened` how to undo it."""
        project = _project_graphs(config)
        registry = graphs or GraphRegistry.with_builtins(omit=[graph_id for graph_id, _ in project])
        for spec in config.graphs:
            graph_id, graph = load_graph(spec)
            registry.register(graph_id, graph)
        for graph_id, graph in project:
            registry.register(graph_id, graph)
        metrics = Metrics(enabled=config.metrics_port >= 0)
        # The timing interceptor first: it wraps the others, so it sees the final status. (The
        # error table is no interceptor: each handler is wrapped once, as it is registered.)
        interceptors: list[grpc.aio.ServerInterceptor] = (
            [MetricsInterceptor(metrics)] if metrics.enabled else []
        )
        keys = _api_keys(config)
        if keys is not None:
            interceptors.append(AuthInterceptor(keys))
        credentials = _server_credentials(config)
        store = await open_store(config.database)
        opened.push_async_callback(store.close)
        relay = await _relay(config)
        if relay is not None:
            opened.push_async_callback(relay.close)
        hub = EventHub(
            EventFrames(),
            config.stream_limits(),
            thread_epoch=store.threads.next_watch_epoch,
            relay=relay,
        )
        opened.callback(hub.close)
        loops = None
        if config.graph_threads > 0:
            loops = GraphLoops(config.graph_threads, switch_interval_ms=config.switch_interval_ms)
            opened.push_async_callback(loops.close)
        runner = Runner(
            store,
            registry,
            hub,
            timeout_seconds=config.run_timeout_seconds or None,
            close_tool_calls=config.close_tool_calls == "on",
            loops=loops,
            max_state_bytes=config.max_state_bytes,
        )
        scheduler = Scheduler(
            store,
            runner,
            hub,
            max_running=config.max_running,
            max_queued=config.max_queued,
            max_attempts=config.max_attempts,
            metrics=metrics,
        )
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_answer_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        register(
            assistant_service_pb2_grpc.add_AssistantServiceServicer_to_server,
            AssistantService(store, registry, page_bytes=config.max_page_bytes),
            server,
        )
        register(
            thread_service_pb2_grpc.add_ThreadServiceServicer_to_server,
            ThreadService(
                store,
                scheduler,
                hub,
                registry,
                page_bytes=config.max_page_bytes,
                max_state_bytes=config.max_state_bytes,
                answer_bytes=config.max_answer_bytes,
            ),
            server,
        )
        register(
            run_service_pb2_grpc.add_RunServiceServicer_to_server,
            RunService(
                store,
                scheduler,
                hub,
                registry,
                run_defaults=config.run_defaults(),
                page_bytes=config.max_page_bytes,
                relay=relay,
                answer_bytes=config.max_answer_bytes,
            ),
            server,
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        port = _bind(server, config.address, credentials)
        if metrics.enabled:
            metrics_port = metrics.serve(config.host, config.metrics_port)
            opened.push_async_callback(metrics.close)
            log.info("metrics on %s:%d", config.host, metrics_port)
        lease = await _join(config, store, scheduler, registry.ids(), opened)
        if lease is not None and relay is not None:
            relay.holds = lease.holding
        opened.push_async_callback(scheduler.stop)  # it may have started runs before failing
        await scheduler.start()
        if lease is not None:
            await lease.start()
        opened.push_async_callback(server.stop, None)
        await server.start()
        for name in ["", *SERVICE_NAMES]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "turnstile serving on %s:%d (database %s; %s; %s)",
            config.host,
            port,
            config.database,
            "mutual TLS" if config.tls_client_ca else "TLS" if credentials else "plaintext",
            "API keys required" if keys else "no API keys",
        )
        app = cls(config, store, hub, scheduler, server, health_servicer, port, metrics, relay)
        app.lease = lease
        app.loops = loops
        return app

    async def stop(self, grace: float | None = None) -> None:
        """Stops gracefully: health NOT_SERVING and new runs refused UNAVAILABLE; running runs
        get `grace` seconds (default `shutdown_grace_seconds`) to end, then are stopped, left
        RUNNING to resume at the next start; then the server and the store close."""
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        await self.scheduler.drain(grace)
        await self.scheduler.stop()
        if self.relay is not None:  # before the lease goes: the takeover's fence refuses
            # this replica's publishes, so the `closed` entries of the attempts it hands over
            # (and the ends of runs that ended while draining) are out first
            await self.relay.flush(min(grace, 1.0))
        if self.lease is not None:  # the runs it stopped are taken over at once
            await self.lease.close()
        await self.server.stop(min(grace, 1.0))
        # The ends that calls cut off by the server's stop wrote (a CancelRun's), announced.
        await self.scheduler.settled()
        if self.relay is not None:  # what its runs emitted last, published
            await self.relay.close()
        if self.loops is not None:  # every run has ended: the scheduler stopped them
            await self.loops.close()
        self.hub.close()
        await self.store.close()
        await self.metrics.close()
        log.info("turnstile stopped")


async def _join(
    config: ServerConfig,
    store: Store,
    scheduler: Scheduler,
    graphs: list[str],
    opened: contextlib.AsyncExitStack,
) -> ReplicaLease | None:
    """On a database replicas share, this replica's lease, joined before any run starts,
    serving `graphs`."""
    replicas = store.replicas
    if replicas is None:
        return None
    name = config.replica_name or f"{socket.gethostname()}:{os.getpid()}"
    lease = ReplicaLease(
        replicas,
        scheduler,
        name=name,
        ttl=config.lease_ttl_seconds,
        beat=config.lease_beat_seconds,
        graphs=graphs,
    )
    await lease.join()
    opened.push_async_callback(lease.close)
    relay = f"redis:{config.redis_key_prefix}" if config.redis else "none"
    await lease.agree(relay, alone=not config.redis)  # DeploymentMismatch: the CLI exits 2
    return lease


async def _relay(config: ServerConfig) -> Relay | None:
    """The Redis relay of runs' events, when `--redis` names one; Redis not answering at
    start is logged, not fatal (it is never the source of truth: streams of runs executing
    elsewhere answer UNAVAILABLE until it answers)."""
    if not config.redis:
        return None
    from turnstile_server.relay import Relay, RelaySettings

    relay = Relay(
        config.redis,
        config.redis_key_prefix,
        EventFrames(),
        config.stream_limits(),
        RelaySettings(config.redis_stream_max_events, config.redis_stream_ttl_seconds),
    )
    try:
        await relay.ping()
    except Exception as exc:
        log.error(
            "Redis at %s does not answer (%r): streams of other replicas' runs answer"
            " UNAVAILABLE until it does",
            config.redis,
            exc,
        )
    return relay


def _project_graphs(config: ServerConfig) -> list[tuple[str, Any]]:
    """The graphs of `--config`'s langgraph.json, imported once its env and dependencies are
    applied; ValueError (the file) or InvalidArgument (a graph) when it cannot be served."""
    if not config.langgraph_config:
        return []
    project = read_project(config.langgraph_config)
    graphs = load_project(project)
    log.info("serving the LangGraph project %s: %s", project.file, ", ".join(project.graph_ids))
    return graphs


def _api_keys(config: ServerConfig) -> ApiKeys | None:
    """The configured API keys (environment and file), or None when every caller is let in."""
    keys = list(config.api_keys)
    if config.api_keys_file:
        keys += read_keys(config.api_keys_file)
    return ApiKeys(keys) if keys else None


def _bind(server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None) -> int:
    """Adds the listening port and returns its number; OSError when it cannot be bound."""
    try:  # grpc raises RuntimeError for an address in use; older versions returned 0
        if credentials is None:
            port = int(server.add_insecure_port(address))
        else:
            port = int(server.add_secure_port(address, credentials))
    except RuntimeError:
        port = 0
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return port


def _server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured PEM files; with a client CA, clients need a
    certificate it signed (mutual TLS)."""
    if not config.tls_cert:
        return None
    key = Path(config.tls_key).read_bytes()
    cert = Path(config.tls_cert).read_bytes()
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def serve(config: ServerConfig) -> None:
    """Runs a server until SIGINT or SIGTERM, then stops it gracefully."""
    # The handlers come first: a signal that arrives as soon as the server says it serves
    # (an orchestrator's stop right after the start) stops it gracefully, not by default death;
    # one that arrives while it starts stops it once it has started.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = await App.start(config)
    log.info("press Ctrl-C to stop")
    await stop.wait()
    log.info("signal received, shutting down")
    await app.stop()
