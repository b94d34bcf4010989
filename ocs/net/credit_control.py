"""Credit-control handler: CCR in, CCA out, through the store's group commit.

The handler maps the CCR to a domain request on the event loop, then submits
one transaction function to the store's writer thread. That function runs the
ledger (duplicate check, engine, balance/session/outbox writes) and encodes
the answer; the answer is sent only after the batch holding it has committed
(durability as configured). A duplicate (same Session-Id and
CC-Request-Number) gets the stored answer, re-stamped with the new request's
Hop-by-Hop and End-to-End ids.

`AsyncStore` adapts the store to asyncio: the writer thread completes a whole
batch with one `call_soon_threadsafe`. `Sweeper` runs the Tcc expiry.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time

from ..charging.ledger import Ledger
from ..charging.mapping import RequestRefused, answer, credit_request
from ..charging.requests import Decision
from ..diameter.message import Message
from ..store.base import complete_futures
from .application import RequestContext

log = logging.getLogger("ocs.charging")
_IDS = struct.Struct(">II")
CREDIT_CONTROL_APPLICATION = 4
CREDIT_CONTROL_COMMAND = 272


class AsyncStore:
    """Store submissions as asyncio futures, completed once per committed batch."""

    def __init__(self, store, loop: asyncio.AbstractEventLoop):
        self.store = store
        self.loop = loop
        store.completer = self._completer

    def _completer(self, done: list) -> None:          # writer thread
        mine = [c for c in done if isinstance(c[0], asyncio.Future)]
        others = [c for c in done if not isinstance(c[0], asyncio.Future)]
        if others:
            complete_futures(others)
        if mine:
            try:
                self.loop.call_soon_threadsafe(self._resolve, mine)
            except RuntimeError:       # loop closed while stopping: nobody waits any more
                pass

    @staticmethod
    def _resolve(done: list) -> None:
        for fut, result, exc in done:
            if fut.done():
                continue
            if exc is None:
                fut.set_result(result)
            else:
                fut.set_exception(exc)

    def run(self, fn) -> asyncio.Future:
        fut = self.loop.create_future()
        self.store.submit(fn, fut)
        return fut


class EncodedAnswer:
    """An answer already encoded in the transaction; only the ids change."""

    __slots__ = ("data", "hop_by_hop", "end_to_end")

    def __init__(self, data: bytes, hop_by_hop: int, end_to_end: int):
        self.data, self.hop_by_hop, self.end_to_end = data, hop_by_hop, end_to_end

    def encode(self) -> bytes:
        return self.data[:12] + _IDS.pack(self.hop_by_hop, self.end_to_end) + self.data[20:]


class CreditControlHandler:
    def __init__(self, store: AsyncStore, ledger: Ledger, origin_host: str, origin_realm: str,
                 clock=time.time):
        self.store, self.ledger, self.clock = store, ledger, clock
        self.origin_host, self.origin_realm = origin_host, origin_realm

    def render(self, msg: Message, d: Decision) -> bytes:
        return answer(msg, d, self.origin_host, self.origin_realm).encode()

    async def __call__(self, msg: Message, ctx: RequestContext):
        try:
            req = credit_request(msg)
        except RequestRefused as e:
            d = Decision.error(e.result_code, str(e), e.failed_avp)
            log.info("CCR refused with %d: %s", e.result_code, e,
                     extra={"session_id": msg.get("Session-Id"), "peer": ctx.peer.origin_host})
            return answer(msg, d, self.origin_host, self.origin_realm)
        now = int(self.clock())
        ledger, render = self.ledger, self.render
        data, decision = await self.store.run(
            lambda txn: ledger.credit_control(txn, req, now, lambda d: render(msg, d)))
        if decision is None:
            log.info("duplicate CCR (Session-Id, CC-Request-Number %d): original answer re-sent",
                     req.number, extra={"session_id": req.session_id, "peer": ctx.peer.origin_host})
        elif decision.result_code != 2001 and decision.message:
            log.info("CCR answered %d: %s", decision.result_code, decision.message,
                     extra={"session_id": req.session_id, "peer": ctx.peer.origin_host})
        return EncodedAnswer(data, msg.hop_by_hop, msg.end_to_end)


class Sweeper:
    """Releases sessions whose Tcc ran out and drops old answers, periodically."""

    def __init__(self, store: AsyncStore, ledger: Ledger, interval: float, clock=time.time):
        self.store, self.ledger, self.interval, self.clock = store, ledger, interval, clock
        self.task: asyncio.Task | None = None

    async def sweep_once(self) -> int:
        total = 0
        while True:
            now = int(self.clock())
            n = await self.store.run(lambda txn: self.ledger.expire(txn, now, 500))
            total += n
            if n < 500:
                return total

    async def _loop(self) -> None:
        while True:
            try:
                n = await self.sweep_once()
                if n:
                    log.debug("sweeper: %d expiry entries handled", n)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweeper failed; retrying")
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
