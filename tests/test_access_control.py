"""API keys and TLS: only callers with an accepted key or certificate get in; health stays open."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests import support
from tests.rpc import Stubs, error_info
from turnstile import UnauthenticatedError, get_client
from turnstile.v1 import run_service_pb2, thread_service_pb2
from turnstile_server.api.auth import read_keys
from turnstile_server.app import App
from turnstile_server.config import ServerConfig

KEYS = ["key-one-3f9a", "key-two-77c1"]


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[App]:
    app = await App.start(
        ServerConfig(port=0, database=str(tmp_path / "keys.db"), api_keys=KEYS),
        support.registry(),
    )
    yield app
    await app.stop(grace=0)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def test_calls_without_an_accepted_key_are_unauthenticated_and_say_why(
    keyed: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with grpc.aio.insecure_channel(keyed.address) as channel:
        stubs = Stubs(channel)
        create = thread_service_pb2.CreateThreadRequest()
        refusals = {}
        for name, metadata in {
            "missing": (),
            "wrong": bearer("key-three"),
            "not bearer": (("authorization", f"Basic {KEYS[0]}"),),
        }.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stubs.threads.CreateThread(create, metadata=metadata)
            refusals[name] = error_info(refused.value)
        with pytest.raises(grpc.aio.AioRpcError) as stream_refused:
            call = stubs.runs.StreamRun(run_service_pb2.StreamRunRequest(), metadata=())
            await call.read()
        # A request that is not even a valid message is refused for the key, not its bytes.
        raw = channel.unary_unary("/turnstile.v1.ThreadService/CreateThread")
        with pytest.raises(grpc.aio.AioRpcError) as garbage:
            await raw(b"\xff\xff\xff")
        accepted = [await stubs.threads.CreateThread(create, metadata=bearer(key)) for key in KEYS]
        lower = await stubs.threads.CreateThread(
            create, metadata=(("authorization", f"bearer {KEYS[0]}"),)
        )

    assert {name: (r.code, r.reason) for name, r in refusals.items()} == {
        "missing": (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING"),
        "wrong": (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_INVALID"),
        "not bearer": (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_MISSING"),
    }
    assert "Bearer" in refusals["missing"].message
    assert error_info(stream_refused.value).reason == "API_KEY_MISSING"
    assert error_info(garbage.value).code == grpc.StatusCode.UNAUTHENTICATED
    assert all(a.thread.thread_id for a in [*accepted, lower])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(key in logged for key in [*KEYS, "key-three"]), "a key reached the logs"


async def test_health_and_reflection_stay_open_and_the_sdk_sends_its_key(keyed: App) -> None:
    async with grpc.aio.insecure_channel(keyed.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

    anonymous = get_client(url=keyed.address)
    client = get_client(url=keyed.address, api_key=KEYS[1])
    try:
        with pytest.raises(UnauthenticatedError):
            await anonymous.threads.create()
        thread = await client.threads.create()
        result = await client.runs.wait_run(thread["thread_id"], "echo", input={})
    finally:
        await anonymous.close()
        await client.close()
    assert result.run["status"] == "success"


def test_keys_come_from_the_environment_or_a_file_never_shown(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# operators\nkey-one-3f9a\n\n  key-two-77c1  # ci\n")
    assert read_keys(path) == KEYS
    config = ServerConfig.from_env(
        {"TURNSTILE_API_KEYS": " a , b ,", "TURNSTILE_API_KEYS_FILE": str(path)}
    )
    assert (config.api_keys, config.api_keys_file) == (["a", "b"], str(path))
    assert "key-one" not in repr(config) and "'a'" not in repr(config)
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no API key"):
        read_keys(tmp_path / "empty")


def pem_files(tmp_path: Path, ca: trustme.CA, name: str, *identities: str) -> tuple[str, str]:
    cert = ca.issue_cert(*identities)
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return str(cert_path), str(key_path)


async def test_tls_serves_clients_that_trust_the_certificate_and_refuses_plaintext(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    cert, key = pem_files(tmp_path, ca, "server", "127.0.0.1", "localhost")
    app = await App.start(
        ServerConfig(port=0, database=str(tmp_path / "tls.db"), tls_cert=cert, tls_key=key),
        support.registry(),
    )
    try:
        trusting = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        async with grpc.aio.secure_channel(app.address, trusting) as channel:
            created = await Stubs(channel).threads.CreateThread(
                thread_service_pb2.CreateThreadRequest()
            )
        async with grpc.aio.insecure_channel(app.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as plaintext:
                await Stubs(channel).threads.CreateThread(
                    thread_service_pb2.CreateThreadRequest(), timeout=5
                )
        async with get_client(
            url=f"https://{app.address}", root_certificates=ca.cert_pem.bytes()
        ) as client:
            sdk = await client.runs.wait_run((await client.threads.create())["thread_id"], "echo")
    finally:
        await app.stop(grace=0)
    assert created.thread.thread_id
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sdk.run["status"] == "success"


async def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(tmp_path: Path) -> None:
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    cert, key = pem_files(tmp_path, server_ca, "server", "127.0.0.1")
    client_ca_path = tmp_path / "clients.pem"
    client_ca.cert_pem.write_to_path(str(client_ca_path))
    app = await App.start(
        ServerConfig(
            port=0,
            database=str(tmp_path / "mtls.db"),
            tls_cert=cert,
            tls_key=key,
            tls_client_ca=str(client_ca_path),
        ),
        support.registry(),
    )

    def client_cert(ca: trustme.CA, name: str) -> tuple[bytes, bytes]:
        chain, private = pem_files(tmp_path, ca, name, f"{name}@example.com")
        return Path(chain).read_bytes(), Path(private).read_bytes()

    async def create(client_pems: tuple[bytes, bytes] | None) -> grpc.StatusCode:
        chain, private = client_pems or (None, None)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=server_ca.cert_pem.bytes(),
            private_key=private,
            certificate_chain=chain,
        )
        async with grpc.aio.secure_channel(app.address, credentials) as channel:
            try:
                await Stubs(channel).threads.CreateThread(
                    thread_service_pb2.CreateThreadRequest(), timeout=5
                )
            except grpc.aio.AioRpcError as refused:
                return refused.code()
        return grpc.StatusCode.OK

    try:
        chain, private = client_cert(client_ca, "sdk")
        async with get_client(
            url=app.address,
            root_certificates=server_ca.cert_pem.bytes(),
            client_certificate=chain,
            client_key=private,
        ) as client:
            sdk_thread = await client.threads.create()
        member = await create(client_cert(client_ca, "member"))
        stranger = await create(client_cert(stranger_ca, "stranger"))
        anonymous = await create(None)
    finally:
        await app.stop(grace=0)
    assert sdk_thread["thread_id"]
    assert member == grpc.StatusCode.OK
    assert stranger == grpc.StatusCode.UNAVAILABLE
    assert anonymous == grpc.StatusCode.UNAVAILABLE
