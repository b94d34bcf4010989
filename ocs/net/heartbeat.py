"""The node's heartbeat in the shared LMDB environment, for `ocs check` (HEALTHCHECK).

Every `interval` seconds each serving process writes `heartbeat:<pid>` in `meta`:
{"pid", "at" (wall-clock seconds), "listen", "origin_host", "peers" (the Origin-Hosts
of the peers connected to this process), "peer_states" ({host: [Origin-State-Id,
watchdog state]}, for the other workers' one-connection-per-peer check)}. The write goes through
the same group commit as the CCRs, so a fresh heartbeat also says the store takes
writes. On a clean stop the process removes its own key; `ocs check` ignores stale
keys of processes that died.
"""

from __future__ import annotations

import json
import logging
import os
import time

from ..store.base import meta_json
from .periodic import Periodic

log = logging.getLogger("ocs.net")
PREFIX = b"heartbeat:"


def key(pid: int) -> bytes:
    return PREFIX + str(pid).encode()


def beats(txn) -> list[dict]:
    """Every heartbeat recorded (any age), newest first."""
    out = [b for _, b in meta_json(txn, PREFIX) if b is not None]
    return sorted(out, key=lambda b: b.get("at", 0), reverse=True)


class Heartbeat(Periodic):
    name = "heartbeat"

    def __init__(self, store, interval: float, listen: str, origin_host: str, clock=time.time,
                 peers=lambda: {}):
        super().__init__(interval)
        self.store, self.clock, self.peers = store, clock, peers
        self.key = key(os.getpid())
        self.info = {"pid": os.getpid(), "listen": listen, "origin_host": origin_host}

    async def tick(self) -> None:
        value = json.dumps({**self.info, "at": round(self.clock(), 3),
                            "peers": sorted(states := self.peers()),
                            "peer_states": states}).encode()
        await self.store.run(lambda txn: txn.put("meta", self.key, value))

    async def stop(self) -> None:
        """Stop beating and remove this process's heartbeat: a clean stop is not a stuck node."""
        await super().stop()
        try:
            await self.store.run(lambda txn: txn.delete("meta", self.key))
        except Exception:                   # noqa: BLE001 - stopping anyway
            log.warning("heartbeat: could not remove %s", self.key.decode())


def held_elsewhere(store, max_age: float, clock=time.time):
    """For PeerTable.elsewhere: host -> (pid, Origin-State-Id, watchdog) of a connection
    another live process of this store lists in its heartbeat, or None."""
    me = os.getpid()

    def lookup(host: str):
        now = clock()
        with store.read() as txn:
            for b in beats(txn):
                if b.get("pid") == me or now - b.get("at", 0) > max_age:
                    continue
                state = (b.get("peer_states") or {}).get(host)
                if state:
                    return b.get("pid"), state[0], state[1]
        return None
    return lookup
