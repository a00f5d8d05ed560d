"""API keys: callers of the Turnstile services present `authorization: Bearer <key>`.

Keys come from `TURNSTILE_API_KEYS` (comma-separated) or a file (one per line, `#` comments),
never from a command-line flag, which other users of the machine could read. They are kept
only as SHA-256 digests and compared in constant time against every configured key, and never
logged. Health checking and reflection stay open: they reveal no data.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import grpc

from turnstile_server.api.rpc_errors import DOMAIN, Refused, rebuilt
from turnstile_server.errors import Unauthenticated

_SCHEME = "bearer "


def read_keys(path: str | Path) -> list[str]:
    """Reads API keys from a file: one per line; blank lines and `#` comments are skipped."""
    keys = []
    for line in Path(path).read_text().splitlines():
        key = line.split("#", 1)[0].strip()
        if key:
            keys.append(key)
    if not keys:
        raise ValueError(f"{path} holds no API key")
    return keys


class ApiKeys:
    """The accepted keys, as digests."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k) for k in keys if k]
        if not self._digests:
            raise ValueError("no API key given")

    def check(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> None:
        """Raises `Unauthenticated` unless the metadata carries an accepted bearer key."""
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if header is None:
            raise Unauthenticated(
                "this server requires an API key: send 'authorization: Bearer <key>'",
                reason="API_KEY_MISSING",
            )
        value = header.decode(errors="replace") if isinstance(header, bytes) else header
        if value[: len(_SCHEME)].lower() != _SCHEME:
            raise Unauthenticated(
                "the authorization header must be 'Bearer <key>'", reason="API_KEY_MISSING"
            )
        presented = _digest(value[len(_SCHEME) :].strip())
        matched = False
        for digest in self._digests:  # no early exit: the time does not tell which key
            matched |= hmac.compare_digest(presented, digest)
        if not matched:
            raise Unauthenticated("the API key is not valid", reason="API_KEY_INVALID")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


# grpc ships no type information, so its base class is Any to mypy.
class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls to the Turnstile services without an accepted key, before the request is
    even decoded: the request becomes the refusal, which the error table's wrapper around
    every handler (`rpc_errors.register`) raises as its status."""

    def __init__(self, keys: ApiKeys) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(f"/{DOMAIN}."):
            return handler
        try:
            self._keys.check(handler_call_details.invocation_metadata)
        except Unauthenticated as refusal:
            # The request is not decoded: it becomes the refusal, raised by the error table.
            refused = Refused(refusal)
            return rebuilt(handler, deserializer=lambda _: refused)
        return handler
