"""A background job of the node: `tick()` every `interval` seconds until stopped.

The Tcc sweeper, the RAR/ASR notice poller and the heartbeat are all one: a
tick that fails is logged and tried again at the next interval (the node keeps
serving), and `stop()` cancels the job and waits for it.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("ocs.net")


class Periodic:
    name = "periodic job"

    def __init__(self, interval: float):
        self.interval = interval
        self.task: asyncio.Task | None = None

    async def tick(self) -> None:
        raise NotImplementedError

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; retrying", self.name)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        await cancel([self.task] if self.task is not None else [])


async def cancel(tasks: list) -> None:
    """Cancel the tasks and wait until each has ended."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        try:
            await task
        except asyncio.CancelledError:
            pass
