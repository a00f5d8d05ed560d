"""`TurnstileClient`, the asyncio client, and `get_client`."""

from __future__ import annotations

from types import TracebackType

from turnstile._assistants import AssistantsClient
from turnstile._runs import RunsClient
from turnstile._threads import ThreadsClient
from turnstile._transport import TlsFiles, Transport

DEFAULT_URL = "localhost:50051"


class TurnstileClient:
    """The asyncio client: `assistants`, `threads` and `runs` over one gRPC channel.

    The channel opens on the first call, in the event loop making it, so the client can be
    built outside a loop; it then belongs to that loop. Close it with `close()` or
    `async with`.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.assistants = AssistantsClient(transport)
        self.threads = ThreadsClient(transport)
        self.runs = RunsClient(transport)

    @property
    def target(self) -> str:
        """The gRPC target the client connects to, e.g. `localhost:50051`."""
        return self._transport.target

    async def close(self) -> None:
        """Closes the channel, cancelling calls in flight."""
        await self._transport.close()

    aclose = close
    """The `langgraph_sdk` spelling of `close`."""

    async def __aenter__(self) -> TurnstileClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<TurnstileClient {self.target!r}>"


def get_client(
    url: str = DEFAULT_URL,
    *,
    api_key: str | None = None,
    timeout: float | None = None,
    root_certificates: bytes | None = None,
    client_certificate: bytes | None = None,
    client_key: bytes | None = None,
    load_balancing: str | None = None,
) -> TurnstileClient:
    """Returns an asyncio client for the Turnstile server at `url`.

    `url` is `host:port` (plaintext), `http://host:port` (plaintext) or `https://host:port`
    (TLS). `api_key` is sent as `authorization: Bearer <key>` on every call. `timeout`, in
    seconds, is the deadline of every call; by default unary reads and writes get 30 s and
    waits, joins and streams none. Calls that are safe to repeat are retried on
    `UNAVAILABLE`, at most 5 times with exponential backoff capped at 2 s.

    TLS trusts the system's CAs unless `root_certificates` (PEM bytes) are given; for mutual
    TLS pass `client_certificate` and `client_key` (PEM bytes). Giving any of them turns TLS
    on for a `host:port` url too.

    `load_balancing="round_robin"` spreads the calls over every address `url` resolves to:
    with `dns:///turnstile.internal:50051` (one A record per replica) or a static list
    `ipv4:10.0.0.1:50051,10.0.0.2:50051`; a retry after `UNAVAILABLE` goes to the next
    address. By default (None, gRPC's `pick_first`) every call goes to the first address that
    answers.
    """
    tls = (
        TlsFiles(root_certificates, client_certificate, client_key)
        if root_certificates or client_certificate or client_key
        else None
    )
    transport = Transport(
        url, api_key=api_key, timeout=timeout, tls=tls, load_balancing=load_balancing
    )
    return TurnstileClient(transport)
