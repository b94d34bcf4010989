"""The node's table of open peers, by Origin-Host (RFC 6733 §5.6).

One transport connection per peer: a CER from an Origin-Host that already has an
open connection is rejected (R-Open + R-Conn-CER -> R-Reject: the new transport
is closed without a CEA), unless the new CER carries a higher Origin-State-Id
than the open connection's CER (the peer restarted and lost its state, RFC 6733
§8.16), or the open connection's watchdog is no longer OKAY (a DWR went
unanswered). Then the open connection is a leftover and is aborted in favour of
the new one. A restarted peer that sends no Origin-State-Id is therefore
refused until its old connection's watchdog notices, within about 2 x Tw. Server-initiated
requests (RAR, ASR: ocs/net/notices.py) find the connection of a session's peer here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..diameter.events import PeerIdentity

if TYPE_CHECKING:
    from .connection import DiameterConnection

log = logging.getLogger("ocs.net")


class PeerTable:
    def __init__(self) -> None:
        self._by_host: dict[str, "DiameterConnection"] = {}

    def admit(self, conn: "DiameterConnection", peer: PeerIdentity) -> bool:
        host = peer.origin_host.lower()
        old = self._by_host.get(host)
        if old is None or old is conn or old.closed.done():
            return True
        before = old.peer.peer.origin_state_id if old.peer and old.peer.peer else None
        restarted = bool(peer.origin_state_id) and before is not None and peer.origin_state_id > before
        suspect = old.peer is not None and old.peer.watchdog_state != "OKAY"
        if restarted or suspect:
            why = ("the peer restarted (higher Origin-State-Id)" if restarted
                   else "its watchdog is " + old.peer.watchdog_state)
            log.warning("peer %s: replacing connection %d with %d: %s", peer.origin_host, old.id, conn.id, why)
            del self._by_host[host]
            old.abort(f"replaced: {why}")
            return True
        log.warning("peer %s already has connection %d open: rejecting connection %d",
                    peer.origin_host, old.id, conn.id)
        return False

    def opened(self, conn: "DiameterConnection", peer: PeerIdentity) -> None:
        self._by_host[peer.origin_host.lower()] = conn

    def closed(self, conn: "DiameterConnection") -> None:
        peer = conn.peer.peer if conn.peer is not None else None
        if peer is not None and self._by_host.get(peer.origin_host.lower()) is conn:
            del self._by_host[peer.origin_host.lower()]

    def get(self, origin_host: str) -> "DiameterConnection | None":
        return self._by_host.get(origin_host.lower())

    def hosts(self) -> frozenset:
        """The (lower-case) Origin-Hosts with an open connection here."""
        return frozenset(self._by_host)

    def __len__(self) -> int:
        return len(self._by_host)
