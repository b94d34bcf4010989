"""The workload of one load-generator process (`Driver`): it opens the
connections, runs the session slots (closed loop, or paced by a 1 ms ticker
under --rate), writes each request from its template, scans each answer for
its Result-Codes, records latencies (`Stats`), stops on the bounds or a stall
and returns its raw result for `ocs.load.report.merge`.
"""

from __future__ import annotations

import array
import asyncio
import random
import sys
import time
from collections import deque

from ..diameter.dictionary import Dictionary
from .common import (
    _AVP, _U32, AVP_EXPERIMENTAL_RESULT, AVP_EXPERIMENTAL_RESULT_CODE, AVP_MSCC, AVP_RESULT_CODE,
    K_E, K_I, K_T, K_U, LoadOptions, _walk)
from .protocol import LoadConnection, Slot
from .templates import build_templates


class Stats:
    def __init__(self):
        self.sent = [0, 0, 0, 0]
        self.answered = [0, 0, 0, 0]
        self.codes = [{}, {}, {}, {}]          # command-level Result-Code -> count, per kind
        self.mscc_codes = [{}, {}, {}, {}]     # MSCC-level Result-Code -> count, per kind
        self.lat = [array.array("d"), array.array("d"), array.array("d"), array.array("d")]
        self.measured = 0                      # answers in the measured window


class Driver:
    """The workload of one process: its connections, slots, pacing and stats."""

    def __init__(self, options: LoadOptions, part: dict, dictionary: Dictionary, shared=None):
        self.options = options
        self.part = part
        self.dictionary = dictionary
        self.loop = asyncio.get_running_loop()
        self.shared = shared                       # (multiprocessing array, index) or None
        self.rng = random.Random(None if options.seed is None else options.seed + part["index"])
        # Origin-State-Id in tenths of a second: a rerun right after this one has a higher
        # one, so the node takes its CER for a restart if our old connection lingers
        self.state_id = int(time.time() * 10) & 0xFFFFFFFF
        self.stamp = time.time_ns() // 1_000_000 & 0xFFFFFFFF
        self.e2e = ((int(time.time()) & 0xFFF) << 20) | self.rng.getrandbits(20)
        self.conns: list[LoadConnection] = []
        self.slots: list[Slot] = []
        self.stats = Stats()
        self.sent_total = 0
        self.answered_total = 0
        self.outstanding = 0
        self.lost = 0
        self.unmatched = 0
        self.dpa = 0
        self.sessions_started = 0
        self.sessions_completed = 0
        self.notes: list[str] = []
        self.max_requests = part["requests"]
        self.stopping = False
        self.stop_reason = ""
        self.done: asyncio.Future = self.loop.create_future()
        self.t_start = 0.0
        self.t_measure = 0.0
        self.t_last = 0.0
        self.t_first_measured = None
        sub_lo, sub_hi = part["subscribers"]
        self.sub_lo, self.sub_n = sub_lo, sub_hi - sub_lo
        self.sub_next = 0
        self.random_subs = options.subscriber_order == "random"
        self.updates = options.updates
        self.event_ratio = options.event_ratio
        self.rate = part["rate"]
        self.ready: deque[Slot] = deque()
        self.issued = 0
        self.t_rate = 0.0
        self.recording = options.warmup <= 0
        self.mscc = options.mscc_codes

    def note(self, text: str) -> None:
        if len(self.notes) < 50:
            self.notes.append(text)

    def next_e2e(self) -> int:
        e = self.e2e
        self.e2e = (e + 1) & 0xFFFFFFFF
        return e

    # ---- set-up ------------------------------------------------------------
    async def connect(self) -> None:
        o = self.options
        for n in self.part["hosts"]:
            host = f"load{n}.localdomain"
            conn = LoadConnection(self, n, host)
            conn.templates = build_templates(self.dictionary, o, host, self.stamp)
            self.conns.append(conn)

        async def one(conn):
            await asyncio.wait_for(self.loop.create_connection(lambda: conn, o.host, o.port), o.timeout)
            await asyncio.wait_for(asyncio.shield(conn.cea), o.timeout)
        results = await asyncio.gather(*(one(c) for c in self.conns), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for c in self.conns:
                if c.transport is not None:
                    c.transport.abort()
            e = errors[0]
            raise ConnectionError(f"cannot open {len(errors)} of {len(self.conns)} connection(s) to "
                                  f"{o.host}:{o.port}: {type(e).__name__}: {e}") from e
        nconn = len(self.conns)
        self.slots = [Slot(self.conns[i % nconn]) for i in range(self.part["sessions"])]

    # ---- the run -----------------------------------------------------------
    async def run(self) -> dict:
        o = self.options
        loop = self.loop
        self.cpu_start = time.process_time()
        self.t_start = self.t_last = time.perf_counter()
        self.t_measure = self.t_start + o.warmup
        self.t_rate = self.t_start
        timers = []
        if self.part["duration"] is not None:
            timers.append(loop.call_later(self.part["duration"], self.stop, "duration reached"))
        if o.warmup > 0:
            timers.append(loop.call_later(o.warmup, self._start_recording))
        self._ticker = loop.call_later(1.0, self._tick_second, 1)
        if self.shared is not None:
            self._share()
        pacer = None
        if self.rate is None:
            for slot in self.slots:
                self.send(slot)
                if self.stopping:
                    break
            for c in self.conns:
                if c.out:
                    c.flush()
        else:
            self.ready.extend(self.slots)
            pacer = loop.call_soon(self._pace)
        self.check_done()
        try:
            await self.done
        finally:
            for t in timers + [self._ticker]:
                t.cancel()
            if pacer is not None:
                self._pacer_off = True
        self.cpu = time.process_time() - self.cpu_start
        if self.outstanding:
            self.note(f"{self.outstanding} request(s) unanswered at the end")
        await asyncio.gather(*(c.disconnect(min(2.0, o.timeout)) for c in self.conns),
                             return_exceptions=True)
        return self.raw_result()

    _pacer_off = False

    def _start_recording(self) -> None:
        self.recording = True
        self.t_measure = time.perf_counter()

    def stop(self, reason: str) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
            self.ready.clear()
            self._final_wait = self.loop.call_later(self.options.timeout, self._give_up)
        self.check_done()

    def _give_up(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def check_done(self) -> None:
        if self.stopping and self.outstanding <= 0 and not self.done.done():
            self.done.set_result(None)
            self._final_wait.cancel()
        elif not self.stopping and self.outstanding <= 0 and not self.ready and self.sent_total:
            if not any(c.open for c in self.conns):
                self.stop("every connection closed")

    def connection_lost(self, conn: LoadConnection) -> None:
        if not self.stopping and not any(c.open for c in self.conns):
            self.stop("every connection closed")

    def _tick_second(self, n: int) -> None:
        now = time.perf_counter()
        if self.options.progress:
            prev = getattr(self, "_prev_answers", 0)
            print(f"[loadgen] {now - self.t_start:5.1f} s  requests {self.sent_total}  answers "
                  f"{self.answered_total}  rate {self.answered_total - prev}/s  outstanding {self.outstanding}",
                  file=sys.stderr, flush=True)
            self._prev_answers = self.answered_total
        if self.outstanding and now - self.t_last > self.options.timeout and not self.stopping:
            self.note(f"no answer for {self.options.timeout} s: stopping")
            self.stop("stalled")
        if not self.done.done():
            self._ticker = self.loop.call_at(
                self.loop.time() + max(0.0, self.t_start + n + 1 - time.perf_counter()),
                self._tick_second, n + 1)

    def _share(self) -> None:
        """Publish the counters to the parent process (its progress line), 10 times a second."""
        arr, i = self.shared
        arr[2 * i] = self.sent_total
        arr[2 * i + 1] = self.answered_total
        if not self.done.done():
            self.loop.call_later(0.1, self._share)

    def _pace(self) -> None:
        if self._pacer_off or self.stopping:
            return
        now = time.perf_counter()
        due = int((now - self.t_rate) * self.rate)
        allowed = due - self.issued
        cap = int(self.rate * 0.01) + 1                 # at most 10 ms of debt is caught up
        if allowed > cap:
            self.issued = due - cap
            allowed = cap
        ready = self.ready
        if allowed > 0 and ready:
            send = self.send
            n = min(allowed, len(ready))
            self.issued += n
            for _ in range(n):
                send(ready.popleft())
                if self.stopping:
                    break
            for c in self.conns:
                if c.out:
                    c.flush()
        if not self.stopping:
            self.loop.call_later(0.001, self._pace)

    def send(self, slot: Slot) -> None:
        """Write the slot's next request into its connection's output buffer."""
        if self.stopping:
            return
        conn = slot.conn
        if not conn.open:
            return
        step = slot.step
        if step == 0:
            conn.session += 1
            slot.session = conn.session
            if self.random_subs:
                i = self.rng.randrange(self.sub_n)
            else:
                i = self.sub_next
                self.sub_next = i + 1 if i + 1 < self.sub_n else 0
            slot.sub = b"%0*d" % (conn.templates[0].sub_digits, self.sub_lo + i)
            kind = K_E if self.event_ratio and self.rng.random() < self.event_ratio else K_I
            self.sessions_started += 1
        elif step > self.updates:
            kind = K_T
        else:
            kind = K_U
        slot.kind = kind
        hbh = conn.hbh
        conn.hbh = (hbh + 1) & 0xFFFFFFFF
        e2e = self.e2e
        self.e2e = (e2e + 1) & 0xFFFFFFFF
        conn.templates[kind].write(conn.out, hbh, e2e, slot.session, step, slot.sub)
        conn.pending[hbh] = slot
        slot.sent_at = time.perf_counter()
        self.outstanding += 1
        self.stats.sent[kind] += 1
        self.sent_total += 1
        if self.max_requests is not None and self.sent_total >= self.max_requests:
            self.stop("request count reached")

    def on_answer(self, slot: Slot, data, pos: int, end: int) -> None:
        now = time.perf_counter()
        self.t_last = now
        self.outstanding -= 1
        self.answered_total += 1
        kind = slot.kind
        stats = self.stats
        # command-level Result-Code (or Experimental-Result-Code), MSCC-level Result-Codes
        rc = None
        p = pos + 20
        unpack = _AVP.unpack_from
        mscc = self.mscc
        while p < end:
            code, fl = unpack(data, p)
            alen = fl & 0xFFFFFF
            if alen < 8:
                break
            if not fl & 0x80000000:
                if code == AVP_RESULT_CODE:
                    rc = _U32.unpack_from(data, p + 8)[0]
                elif code == AVP_MSCC and mscc:
                    q, qend = p + 8, p + alen
                    while q < qend:
                        c2, f2 = unpack(data, q)
                        l2 = f2 & 0xFFFFFF
                        if l2 < 8:
                            break
                        if c2 == AVP_RESULT_CODE and not f2 & 0x80000000:
                            d = stats.mscc_codes[kind]
                            mrc = _U32.unpack_from(data, q + 8)[0]
                            d[mrc] = d.get(mrc, 0) + 1
                        q += (l2 + 3) & ~3
                elif code == AVP_EXPERIMENTAL_RESULT and rc is None:
                    for c2, v2, off2, _l2 in _walk(data, p + 8, p + alen):
                        if c2 == AVP_EXPERIMENTAL_RESULT_CODE and not v2:
                            rc = _U32.unpack_from(data, off2)[0]
            p += (alen + 3) & ~3
        if rc is None:
            rc = -1
        d = stats.codes[kind]
        d[rc] = d.get(rc, 0) + 1
        stats.answered[kind] += 1
        if self.recording:
            stats.lat[kind].append(now - slot.sent_at)
            stats.measured += 1
            if self.t_first_measured is None:
                self.t_first_measured = now
        # the session's next request
        if kind == K_T or kind == K_E:
            slot.step = 0
            if kind == K_T:
                self.sessions_completed += 1
        else:
            slot.step += 1
        if self.stopping:
            if self.outstanding <= 0:
                self.check_done()
        elif self.rate is None:
            self.send(slot)
        else:
            self.ready.append(slot)

    def raw_result(self) -> dict:
        s = self.stats
        end = self.t_last
        return {
            "index": self.part["index"],
            "connections": [{"origin_host": c.origin_host, "cea_result_code": c.cea_result,
                             "peer_origin_host": c.peer_host} for c in self.conns],
            "sessions": len(self.slots),
            "sent": list(s.sent), "answered": list(s.answered),
            "codes": [dict(x) for x in s.codes], "mscc_codes": [dict(x) for x in s.mscc_codes],
            "lat": [a.tobytes() for a in s.lat],
            "measured": s.measured,
            # on Linux perf_counter is CLOCK_MONOTONIC: comparable across processes
            "t_start": self.t_start, "t_measure": max(self.t_measure, self.t_start),
            "t_end": end,
            "outstanding": self.outstanding, "lost": self.lost, "unmatched": self.unmatched,
            "dpa": self.dpa, "cpu_s": self.cpu, "sessions_started": self.sessions_started,
            "sessions_completed": self.sessions_completed, "stop_reason": self.stop_reason,
            "notes": self.notes,
        }
