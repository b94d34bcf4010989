"""The node's table of open peers, by Origin-Host (RFC 6733 §5.6).

One transport connection per peer: a CER from an Origin-Host that already has an
open connection is rejected (R-Open + R-Conn-CER -> R-Reject: the new transport
is closed without a CEA), unless the new CER carries a higher Origin-State-Id
than the open connection's CER (the peer restarted and lost its state, RFC 6733
§8.16), or the open connection's watchdog is no longer OKAY (a DWR went
unanswered). Then the open connection is a leftover and is aborted in favour of
the new one. A restarted peer that sends no Origin-State-Id is therefore
refused until its old connection's watchdog notices, within about 2 x Tw.
With several workers (`ocs serve --workers N`) the rule also holds against the
connections of the other workers, as their heartbeats list them with Origin-State-Id
and watchdog state (`elsewhere`): up to a heartbeat (1 s) old, so two connections
opened within that second on two workers are both accepted, and a connection
replaced on another worker stays until that worker's watchdog ends it. Server-initiated
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
        # with several workers: (pid, Origin-State-Id, watchdog state) of another live
        # worker's connection from this Origin-Host (from the heartbeats), or None
        self.elsewhere = None

    def admit(self, conn: "DiameterConnection", peer: PeerIdentity) -> bool:
        host = peer.origin_host.lower()
        old = self._by_host.get(host)
        if old is None or old is conn or old.closed.done():
            return self._admit_elsewhere(conn, peer)
        before = old.peer.peer.origin_state_id if old.peer and old.peer.peer else None
        return self._decide(conn, peer, before, old.peer.watchdog_state if old.peer else "OKAY",
                            f"connection {old.id}", old)

    def _admit_elsewhere(self, conn, peer: PeerIdentity) -> bool:
        """The same rule against a connection another worker holds (its heartbeat says;
        it may be up to a heartbeat interval old). A replaced connection there stays
        until that worker's watchdog ends it."""
        other = self.elsewhere(peer.origin_host.lower()) if self.elsewhere is not None else None
        if other is None:
            return True
        pid, before, watchdog = other
        return self._decide(conn, peer, before, watchdog, f"a connection in worker pid {pid}", None)

    def _decide(self, conn, peer: PeerIdentity, before, watchdog: str, where: str, old) -> bool:
        host = peer.origin_host.lower()
        restarted = bool(peer.origin_state_id) and before is not None and peer.origin_state_id > before
        suspect = watchdog != "OKAY"
        if restarted or suspect:
            why = ("the peer restarted (higher Origin-State-Id)" if restarted
                   else "its watchdog is " + watchdog)
            log.warning("peer %s: replacing %s with connection %d: %s", peer.origin_host, where,
                        conn.id, why)
            if old is not None:
                del self._by_host[host]
                old.abort(f"replaced: {why}")
            return True
        log.warning("peer %s already has %s open: rejecting connection %d",
                    peer.origin_host, where, conn.id)
        return False

    def opened(self, conn: "DiameterConnection", peer: PeerIdentity) -> None:
        self._by_host[peer.origin_host.lower()] = conn

    def closed(self, conn: "DiameterConnection") -> None:
        peer = conn.peer.peer if conn.peer is not None else None
        if peer is not None and self._by_host.get(peer.origin_host.lower()) is conn:
            del self._by_host[peer.origin_host.lower()]

    def get(self, origin_host: str) -> "DiameterConnection | None":
        return self._by_host.get(origin_host.lower())

    def states(self) -> dict:
        """{Origin-Host (lower case): [Origin-State-Id, watchdog state]} of the open peers."""
        out = {}
        for host, conn in self._by_host.items():
            if conn.peer is not None and conn.peer.peer is not None:
                out[host] = [conn.peer.peer.origin_state_id, conn.peer.watchdog_state]
        return out

    def hosts(self) -> frozenset:
        """The (lower-case) Origin-Hosts with an open connection here."""
        return frozenset(self._by_host)

    def __len__(self) -> int:
        return len(self._by_host)
