"""Credit-control handler: CCR in, CCA out, through the store's group commit.

The handler maps the CCR to a domain request on the event loop, then submits
one transaction function to the store's writer thread. That function runs the
ledger (duplicate check, engine, balance/session/outbox writes) and encodes
the answer; the answer is sent only after the batch holding it has committed
(durability as configured). A duplicate (same Session-Id and
CC-Request-Number) gets the stored answer, re-stamped with the new request's
Hop-by-Hop and End-to-End ids.

`AsyncStore` runs the store's group commit on the event loop itself (see its
docstring for why not on the store's writer thread). `Sweeper` runs the Tcc
expiry.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from types import SimpleNamespace

from ..charging.ledger import Ledger
from ..charging.cca import AnswerEncoder
from ..charging.mapping import RequestRefused, credit_request
from ..charging.requests import Decision
from ..charging.units import UnitType
from ..diameter.answers import error_answer, result_code_of
from ..diameter.dictionary import Dictionary
from ..diameter.errors import ResultCode
from ..diameter.labels import REQUEST_TYPE_NAMES, request_labels
from ..diameter.message import Message
from ..store.speculate import speculate
from .application import RequestContext
from .periodic import Periodic

log = logging.getLogger("ocs.charging")
_IDS = struct.Struct(">II")
CREDIT_CONTROL_APPLICATION = 4
CREDIT_CONTROL_COMMAND = 272


class AsyncStore:
    """Group commit on the event loop: the transaction functions submitted during
    one loop iteration run in one write transaction, committed once, right here
    (`LmdbStore.run_here`), and their futures complete after the commit. The
    loop thread is the only busy thread, so py-lmdb's GIL release on every get
    and put costs nothing; with durability fsync the commit's fsync holds the
    loop for its ~2 ms while the next batch queues in the socket buffers."""

    def __init__(self, store, loop: asyncio.AbstractEventLoop, metrics=None):
        self.store = store
        self.loop = loop
        self.metrics = metrics              # ocs.metrics.tally.Tally or None
        self._outcome = None if metrics is None else (
            lambda o: metrics.inc("ocs_store_speculations_total", (o,)))
        self._snapshot = None               # shared by the speculations until the next flush
        self.max_batch = store.max_batch
        self._pending: list = []
        self._scheduled = False

    def submit(self, fn, callback) -> None:
        """Run fn in the next batch; callback(result, exception) after the commit."""
        self._pending.append((fn, callback))
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def speculate(self, fn):
        """`fn` run now against a snapshot, outside the write lock; what to submit
        instead of it (ocs/store/speculate.py). Falls back to `fn` itself."""
        try:
            if self._snapshot is None:
                self._snapshot = self.store.snapshot()
            return speculate(self._snapshot, fn, self._outcome)
        except Exception:                   # noqa: BLE001 - no snapshot: decide in the lock
            return fn

    def _end_snapshot(self) -> None:
        if self._snapshot is not None:
            snapshot, self._snapshot = self._snapshot, None
            try:
                self.store.end_snapshot(snapshot)
            except Exception:               # noqa: BLE001 - the store is closing
                pass

    def run(self, fn) -> asyncio.Future:
        fut = self.loop.create_future()

        def done(result, exc) -> None:
            if not fut.done():
                if exc is None:
                    fut.set_result(result)
                else:
                    fut.set_exception(exc)
        self.submit(fn, done)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        # later speculations should see this batch's writes (and other workers')
        self._end_snapshot()
        batch = self._pending
        if len(batch) > self.max_batch:
            batch, self._pending = batch[:self.max_batch], batch[self.max_batch:]
            self._scheduled = True
            self.loop.call_soon(self._flush)
        else:
            self._pending = []
        started = time.perf_counter()
        try:
            done = self.store.run_here(batch)
        except Exception as exc:            # closed store, or a bug: no waiter is stranded
            done = [(callback, None, exc) for _, callback in batch]
        if self.metrics is not None:
            self.metrics.observe("ocs_store_commit_duration_seconds", (),
                                 time.perf_counter() - started)
            self.metrics.observe("ocs_store_commit_batch_size", (), len(batch))
        for callback, result, exc in done:
            try:
                callback(result, exc)
            except Exception:
                log.exception("store completion callback failed")


class EncodedAnswer:
    """An answer already encoded in the transaction; only the ids change."""

    __slots__ = ("data", "hop_by_hop", "end_to_end")

    def __init__(self, data: bytes, hop_by_hop: int, end_to_end: int):
        self.data, self.hop_by_hop, self.end_to_end = data, hop_by_hop, end_to_end

    def encode(self) -> bytes:
        return self.data[:12] + _IDS.pack(self.hop_by_hop, self.end_to_end) + self.data[20:]


class CreditControlHandler:
    """Credit-Control-Request (RFC 4006) through the ledger, answered after the commit.

    Overload: at most `max_pending` CCRs wait for their group commit in this worker;
    one more is answered at once with 3004 DIAMETER_TOO_BUSY (RFC 6733 §7.1.3, a
    protocol error: E bit set) and charged nothing, so that a burst larger than the
    store can absorb gets a fast refusal the client can retry elsewhere instead of a
    queue (and latency) without bound."""

    def __init__(self, store: AsyncStore, ledger: Ledger, dictionary: Dictionary, origin_host: str,
                 origin_realm: str, clock=time.time, max_pending: int = 10000, metrics=None):
        self.store, self.ledger, self.clock = store, ledger, clock
        self.metrics = metrics              # ocs.metrics.tally.Tally or None
        self.encoder = AnswerEncoder(dictionary, origin_host, origin_realm)
        self.local = SimpleNamespace(origin_host=origin_host, origin_realm=origin_realm)
        self.max_pending = max_pending
        self.speculative = False            # decide outside the write lock (see AsyncStore)
        self.pending = 0                    # CCRs submitted, not yet answered
        self.too_busy = 0                   # answered 3004 since start

    def render(self, msg: Message, d: Decision) -> bytes:
        return self.encoder.encode(msg, d)

    def begin(self, msg: Message, ctx: RequestContext, respond) -> None:
        """Answer `msg` through respond(answer) once its transaction has committed
        (respond(None) asks the connection for a 5012)."""
        try:
            # the connection's peer: where a RAR/ASR for the session is sent (through a
            # DRA it is the DRA, not the CCR's Origin-Host)
            req = credit_request(msg, ctx.peer.origin_host)
        except RequestRefused as e:
            d = Decision.error(e.result_code, str(e), e.failed_avp)
            log.info("CCR refused with %d: %s", e.result_code, e,
                     extra={"session_id": msg.get("Session-Id"), "peer": ctx.peer.origin_host})
            self._count(msg, ctx, e.result_code)
            respond(EncodedAnswer(self.render(msg, d), msg.hop_by_hop, msg.end_to_end))
            return
        if self.pending >= self.max_pending:
            self.too_busy += 1
            if self.too_busy == 1 or self.too_busy % 1000 == 0:
                log.warning("overload: %d CCRs waiting for the store; answering 3004 "
                            "(%d so far)", self.pending, self.too_busy,
                            extra={"peer": ctx.peer.origin_host})
            self._count(msg, ctx, ResultCode.DIAMETER_TOO_BUSY, req)
            respond(error_answer(self.local, msg, ResultCode.DIAMETER_TOO_BUSY,
                                 f"{self.pending} requests waiting"))
            return
        now = int(self.clock())
        ledger, render = self.ledger, self.render
        self.pending += 1

        def committed(result, exc) -> None:
            self.pending -= 1
            if exc is not None:
                log.error("CCR failed in the store: %r", exc,
                          extra={"session_id": req.session_id, "peer": ctx.peer.origin_host},
                          exc_info=exc)
                self._count(msg, ctx, 5012, req)
                respond(None)
                return
            data, decision = result
            if self.metrics is not None:
                self._count(msg, ctx, decision.result_code if decision is not None
                            else result_code_of(data) or 0, req)
                if decision is not None:
                    self._units(req, decision)
            if decision is None:
                log.info("duplicate CCR (Session-Id, CC-Request-Number %d): original answer "
                         "re-sent", req.number,
                         extra={"session_id": req.session_id, "peer": ctx.peer.origin_host})
            elif decision.result_code != 2001 and decision.message:
                log.info("CCR answered %d: %s", decision.result_code, decision.message,
                         extra={"session_id": req.session_id, "peer": ctx.peer.origin_host})
            respond(EncodedAnswer(data, msg.hop_by_hop, msg.end_to_end))

        fn = lambda txn: ledger.credit_control(txn, req, now, lambda d: render(msg, d))  # noqa: E731
        # decided now, outside LMDB's write lock (shared by every worker); the batch
        # only checks that what it read is unchanged and writes
        self.store.submit(self.store.speculate(fn) if self.speculative else fn, committed)

    def _count(self, msg: Message, ctx: RequestContext, result_code: int, req=None) -> None:
        m = self.metrics
        if m is None:
            return
        # the request type from the mapped request when there is one (no second AVP
        # lookup on the hot path), else from the message
        labels = (("CCR", REQUEST_TYPE_NAMES.get(int(req.request_type), "")) if req is not None
                  else request_labels(msg))
        m.inc("ocs_diameter_answers_total", labels + (str(int(result_code)),))
        m.observe("ocs_diameter_request_duration_seconds", labels,
                  self.store.loop.time() - ctx.received_at)

    def _units(self, req, decision: Decision) -> None:
        m, service = self.metrics, req.context
        for s in decision.services:
            if s.granted:
                for unit, n in s.granted.items():
                    m.inc("ocs_granted_units_total", (service, UNIT_LABELS[unit]), n)
        for s in req.services:
            for unit, n in s.used.items():
                m.inc("ocs_used_units_total", (service, UNIT_LABELS[unit]), n)


UNIT_LABELS = {u: u.name.lower() for u in UnitType}


class Sweeper(Periodic):
    """Releases sessions whose Tcc ran out and drops old answers, periodically."""

    name = "sweeper"

    def __init__(self, store: AsyncStore, ledger: Ledger, interval: float, clock=time.time):
        super().__init__(interval)
        self.store, self.ledger, self.clock = store, ledger, clock

    async def sweep_once(self) -> int:
        total = 0
        while True:
            now = int(self.clock())
            n = await self.store.run(lambda txn: self.ledger.expire(txn, now, 500))
            total += n
            if n < 500:
                return total

    async def tick(self) -> None:
        n = await self.sweep_once()
        if n:
            log.debug("sweeper: %d expiry entries handled", n)
