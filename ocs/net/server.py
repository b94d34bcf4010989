"""TCP listener: one DiameterConnection per accepted peer, graceful DPR on stop."""

from __future__ import annotations

import asyncio
import logging

from .connection import DiameterConnection, NodeContext

log = logging.getLogger("ocs.net")


class DiameterServer:
    def __init__(self, node: NodeContext):
        self.node = node
        self.connections: set[DiameterConnection] = set()
        self._server: asyncio.AbstractServer | None = None

    def _factory(self) -> DiameterConnection:
        conn = DiameterConnection(self.node, initiator=False)
        self.connections.add(conn)
        conn.closed.add_done_callback(lambda _f: self.connections.discard(conn))
        return conn

    async def start(self, host: str, port: int, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, host, port, reuse_address=True, reuse_port=reuse_port or None)
        log.info("listening on %s", ", ".join(str(s.getsockname()) for s in self._server.sockets))

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, send DPR on every open connection, wait for them."""
        if self._server is not None:
            self._server.close()
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.disconnect(timeout) for c in conns), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
