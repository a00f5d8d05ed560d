"""A DNS server for tests: one name answered with A records on 127.0.0.1, port 0.

gRPC's default resolver (c-ares) takes the server from a target's authority, so a channel on
`dns://127.0.0.1:<port>/<name>:<grpc port>` resolves `<name>` here and nowhere else: no
system configuration, no network. The answer carries one A record per address; every other
question gets an empty answer (NOERROR for the name, NXDOMAIN for other names).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

A = 1
IN = 1
_RESPONSE = 0x8180  # QR, RD and RA set, opcode QUERY
_NXDOMAIN = 3
_TTL = 1


@dataclass
class Zone(asyncio.DatagramProtocol):
    """Answers `name` with `addresses`; keeps each question (name, type) it was asked."""

    name: str
    addresses: Sequence[str]
    port: int = 0
    asked: list[tuple[str, int]] = field(default_factory=list)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        ident = struct.unpack("!H", data[:2])[0]
        labels, end = [], 12
        while length := data[end]:
            labels.append(data[end + 1 : end + 1 + length].decode("ascii"))
            end += 1 + length
        qtype = struct.unpack("!H", data[end + 1 : end + 3])[0]
        question = data[12 : end + 5]  # the name, its type and class, echoed back
        name = ".".join(labels).lower()
        self.asked.append((name, qtype))
        ours = name == self.name.lower()
        answers = list(self.addresses) if ours and qtype == A else []
        flags = _RESPONSE | (0 if ours else _NXDOMAIN)
        header = struct.pack("!HHHHHH", ident, flags, 1, len(answers), 0, 0)
        records = b"".join(  # 0xC00C: the name at offset 12, the question's
            struct.pack("!HHHIH", 0xC00C, A, IN, _TTL, 4) + socket.inet_aton(address)
            for address in answers
        )
        assert self.transport is not None
        self.transport.sendto(header + question + records, addr)

    def target(self, port: int) -> str:
        """The gRPC target resolving `name` through this server, with the service's `port`."""
        return f"dns://127.0.0.1:{self.port}/{self.name}:{port}"


@asynccontextmanager
async def zone(name: str, addresses: Sequence[str]) -> AsyncIterator[Zone]:
    """A DNS server on 127.0.0.1 (UDP, port 0) answering `name` with `addresses`."""
    served = Zone(name, addresses)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: served, local_addr=("127.0.0.1", 0)
    )
    served.port = transport.get_extra_info("sockname")[1]
    try:
        yield served
    finally:
        transport.close()
