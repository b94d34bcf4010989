"""Client side: connect, CER/CEA, send requests and await answers, DPR on close.

Used by tests and tools (load generator, probes); the node uses the same
connection class for server-initiated requests (RAR/ASR) later.
"""

from __future__ import annotations

import asyncio

from ..diameter.capabilities import LocalPeer
from ..diameter.dictionary import Dictionary
from ..diameter.events import PeerIdentity
from ..diameter.message import Message, request
from .connection import DiameterConnection, NodeContext


class DiameterClient:
    def __init__(self, conn: DiameterConnection):
        self.conn = conn

    @property
    def peer(self) -> PeerIdentity:
        return self.conn.peer.peer

    @property
    def dictionary(self) -> Dictionary:
        return self.conn.node.dictionary

    @property
    def local(self) -> LocalPeer:
        return self.conn.node.local

    def build(self, command: str, avps=(), **kw) -> Message:
        """A request with Origin-Host/Origin-Realm filled in first."""
        base = [("Origin-Host", self.local.origin_host), ("Origin-Realm", self.local.origin_realm)]
        return request(self.dictionary, command, base + list(avps), **kw)

    async def request(self, msg: Message, timeout: float = 10.0) -> Message:
        return await self.conn.request(msg, timeout)

    async def close(self, timeout: float | None = None) -> None:
        await self.conn.disconnect(timeout)


async def connect(host: str, port: int, node: NodeContext, timeout: float = 10.0) -> DiameterClient:
    """Open a TCP connection and complete the capabilities exchange."""
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(
        loop.create_connection(lambda: DiameterConnection(node, initiator=True), host, port), timeout)
    try:
        await asyncio.wait_for(asyncio.shield(conn.opened), timeout)
    except BaseException:
        if conn.transport is not None:
            conn.transport.abort()
        raise
    return DiameterClient(conn)
