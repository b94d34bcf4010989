"""Publishes this process's metrics into the shared store (see ocs.metrics).

Every `interval` seconds the worker's `Tally`, plus gauges read now (open peer
connections with their watchdog state, CCRs waiting for a commit), is written
to `metrics:<process>` in `meta` through the same group commit as the CCRs.
On a clean stop a last snapshot marked "stopped" is written: its counters keep
counting in the totals, its gauges no longer do.
"""

from __future__ import annotations

import logging
import time

from ..metrics.collect import PREFIX, key, live
from ..metrics.publish import encode, process_name
from ..metrics.tally import Tally
from ..store.base import meta_json
from .periodic import Periodic

log = logging.getLogger("ocs.net")


def drop_ended(txn, now: float) -> int:
    """Delete the snapshots of processes that are no longer running (at node start:
    their counts end with them, a counter reset as Prometheus expects on restart)."""
    gone = [k for k, snap in meta_json(txn, PREFIX) if snap is None or not live(snap, now)]
    for k in gone:
        txn.delete("meta", k)
    return len(gone)


class MetricsPublisher(Periodic):
    name = "metrics publisher"

    def __init__(self, store, tally: Tally, interval: float, node=None, handler=None,
                 clock=time.time, process: str | None = None):
        super().__init__(interval)
        self.store, self.tally, self.node, self.handler, self.clock = store, tally, node, handler, clock
        self.process = process or process_name("node", clock)
        self.key = key(self.process)

    def gauges(self) -> dict:
        out: dict = {}
        if self.node is not None:
            for host in self.node.peers.hosts():
                conn = self.node.peers.get(host)
                if conn is None or conn.peer is None or conn.peer.peer is None:
                    continue
                labels = (conn.peer.peer.origin_host, conn.peer.watchdog_state)
                out[("ocs_peer_up", labels)] = out.get(("ocs_peer_up", labels), 0) + 1
        if self.handler is not None:
            out[("ocs_pending_requests", ())] = self.handler.pending
        return out

    def record(self, stopped: bool = False) -> bytes:
        return encode(self.tally, self.process, self.clock(), self.interval, stopped,
                      self.gauges())

    async def tick(self) -> None:
        value = self.record()
        await self.store.run(lambda txn: txn.put("meta", self.key, value))

    async def stop(self) -> None:
        await super().stop()
        value = self.record(stopped=True)
        try:
            await self.store.run(lambda txn: txn.put("meta", self.key, value))
        except Exception:                   # noqa: BLE001 - stopping anyway
            log.warning("metrics: could not write the last snapshot")
