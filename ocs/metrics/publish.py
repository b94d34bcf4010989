"""Publishing a process's tally into the store, for the gateways (threads, no event loop).

The node's workers publish through their event loop (ocs/net/telemetry.py); the
EM and BRM gateways, which write the store synchronously, use `SnapshotWriter`:
`maybe()` from their main loop writes at most once per interval, `final()` on stop.
"""

from __future__ import annotations

import json
import logging
import os
import time

from .collect import key
from .tally import Tally

log = logging.getLogger("ocs.metrics")


def process_name(kind: str, clock=time.time) -> str:
    """A name unique over restarts: kind, pid and start time in ms."""
    return f"{kind}-{os.getpid()}-{int(clock() * 1000)}"


def encode(tally: Tally, process: str, at: float, interval: float, stopped: bool = False,
           gauges: dict | None = None) -> bytes:
    snap = tally.snapshot(process, os.getpid(), at, interval, stopped, gauges)
    return json.dumps(snap, separators=(",", ":")).encode()


class SnapshotWriter:
    def __init__(self, store, kind: str, interval: float, clock=time.time):
        self.store, self.interval, self.clock = store, interval, clock
        self.tally = Tally()
        self.process = process_name(kind, clock)
        self.key = key(self.process)
        self.gauges: dict = {}
        self._next = 0.0

    def maybe(self) -> None:
        now = self.clock()
        if now >= self._next:
            self._next = now + self.interval
            self._write(now, False)

    def final(self) -> None:
        self._write(self.clock(), True)

    def _write(self, now: float, stopped: bool) -> None:
        value = encode(self.tally, self.process, now, self.interval, stopped, self.gauges)
        try:
            self.store.write(lambda txn: txn.put("meta", self.key, value))
        except Exception as e:              # noqa: BLE001 - metrics never stop a gateway
            log.warning("metrics: could not publish (%s)", e)
