"""The node's heartbeat in the shared LMDB environment, for `ocs check` (HEALTHCHECK).

Every `interval` seconds each serving process writes `heartbeat:<pid>` in `meta`:
{"pid", "at" (wall-clock seconds), "listen", "origin_host"}. The write goes through
the same group commit as the CCRs, so a fresh heartbeat also says the store takes
writes. On a clean stop the process removes its own key; `ocs check` ignores stale
keys of processes that died.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

log = logging.getLogger("ocs.net")
PREFIX = b"heartbeat:"


def key(pid: int) -> bytes:
    return PREFIX + str(pid).encode()


def beats(txn) -> list[dict]:
    """Every heartbeat recorded (any age), newest first."""
    out = []
    for _, value in txn.items("meta", PREFIX, PREFIX[:-1] + b";"):
        try:
            out.append(json.loads(bytes(value)))
        except ValueError:
            continue
    return sorted(out, key=lambda b: b.get("at", 0), reverse=True)


class Heartbeat:
    def __init__(self, store, interval: float, listen: str, origin_host: str, clock=time.time):
        self.store, self.interval, self.clock = store, interval, clock
        self.key = key(os.getpid())
        self.info = {"pid": os.getpid(), "listen": listen, "origin_host": origin_host}
        self.task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while True:
            value = json.dumps({**self.info, "at": round(self.clock(), 3)}).encode()
            try:
                await self.store.run(lambda txn: txn.put("meta", self.key, value))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat: the store refused the write")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
            try:
                await self.store.run(lambda txn: txn.delete("meta", self.key))
            except Exception:               # noqa: BLE001 - stopping anyway
                pass
