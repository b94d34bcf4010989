#!/usr/bin/env python3
"""Gy credit-control load generator: throughput and latency of a node over TCP.

    python3 tools/loadgen.py --host 127.0.0.1 --port 3868            # 10 s, as fast as possible
    python3 tools/loadgen.py --rate 10000 --duration 30               # paced, for latency at a rate
    python3 tools/loadgen.py --requests 100000 --processes 2 --json   # 2 driver processes, JSON out

It is a Diameter client of its own, kept cheap per request so that it is not
the bottleneck: a raw asyncio.Protocol per connection (not the node's
DiameterConnection), no task or future per request, requests written from
pre-encoded templates and answers read by a header + Result-Code scan.

Connections: `--connections` in all (spread over `--processes`), each with its
own Origin-Host `load{n}.localdomain`. Each sends a CER (Auth-Application-Id 4)
and waits for CEA 2001; DWR from the node is answered with DWA, DPR with DPA;
at the end each connection sends DPR, waits briefly for DPA and closes.

Workload: `--sessions` concurrent Gy sessions in all, spread over the
connections. A session is CCR-INITIAL (CC-Request-Number 0), `--updates`
CCR-UPDATEs (1..U) and CCR-TERMINATION (U+1); each request waits for its
answer before the session's next one, and a finished session's slot starts a
new Session-Id at once. With `--event-ratio F`, a fraction F of the sessions
started are a single CCR-EVENT instead (CC-Request-Type 4, Requested-Action
DIRECT_DEBITING, Service-Context-Id 32274@3gpp.org, RSU {CC-Service-Specific-
Units 1}). Subscription-Id is END_USER_E164 with data `--subscriber-prefix`
+ index zero-padded to `--subscriber-digits`, the index taken round-robin (or
at random) over `--subscribers` (each process gets its own slice).

Messages: per connection and request type, one CCR is built with the ocs
codec at start-up; each request copies it and patches the Hop-by-Hop and
End-to-End ids, the fixed-width session counter at the end of the Session-Id,
CC-Request-Number and the fixed-width subscriber digits. At start-up every
template is patched once and decoded with the full grammar check to prove the
offsets. The Session-Id is `load{n}.localdomain;{start ms mod 2^32};{12-digit
counter}`.

Bounds: `--requests N` (requests sent in all) and/or `--duration T` seconds
(10 s when neither is given). When a bound is reached no new request is sent;
the outstanding ones are waited for (at most `--timeout`) and sessions then
still open are left open on the node. If no answer arrives for `--timeout`
seconds while requests are outstanding, the run stops and counts them as
unanswered.

Pacing: without `--rate` every session sends its next request as soon as the
previous answer arrives (closed loop: `--sessions` requests in flight). With
`--rate R` sends are released by a 1 ms ticker to keep R requests/s in all
(a session still waits for its own answer; latency is measured from the send,
so a node slower than R shows as an achieved rate below R).

Output: requests, answers by Result-Code (command level: Result-Code or
Experimental-Result-Code; and the MSCC-level Result-Codes), CCR/s (answers in
the measured window / its length, from the first send, or the end of
`--warmup`, to the last answer) and latency p50/p95/p99/max per request type in
ms. Progress once a second on stderr (`--quiet` to silence). `--json` prints
the result as JSON.

API: `LoadOptions` (the CLI options as fields), `async run_load(options) ->
dict` (a LoadOptions or a dict of its fields) and `main(argv) -> int`.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import dataclasses
import json
import multiprocessing
import os
import queue as queue_module
import random
import struct
import sys
import time
from collections import deque

_ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from ocs.diameter.capabilities import LocalPeer, build_cer  # noqa: E402
from ocs.diameter.dictionary import Dictionary  # noqa: E402
from ocs.diameter.dictload import load_directory  # noqa: E402
from ocs.diameter.message import Message, decode_message, request  # noqa: E402

KINDS = ("I", "U", "T", "E")
K_I, K_U, K_T, K_E = range(4)
CC_REQUEST_TYPE = (1, 2, 3, 4)
SESSION_DIGITS = 12                      # fixed-width session counter at the end of Session-Id

_HDR = struct.Struct(">IIIII")
_IDS = struct.Struct(">II")
_AVP = struct.Struct(">II")
_U32 = struct.Struct(">I")

CMD_CER, CMD_DWR, CMD_DPR, CMD_CC = 257, 280, 282, 272
AVP_SESSION_ID, AVP_CC_REQUEST_NUMBER = 263, 415
AVP_SUBSCRIPTION_ID, AVP_SUBSCRIPTION_ID_DATA = 443, 444
AVP_RESULT_CODE, AVP_EXPERIMENTAL_RESULT, AVP_EXPERIMENTAL_RESULT_CODE = 268, 297, 298
AVP_MSCC = 456


@dataclasses.dataclass
class LoadOptions:
    host: str = "127.0.0.1"
    port: int = 3868
    connections: int = 4                 # in all, spread over the processes
    sessions: int = 1000                 # concurrent sessions in all
    updates: int = 2                     # CCR-UPDATEs per session
    subscribers: int = 1000              # subscriber indexes 0..subscribers-1 (+ subscriber_first)
    subscriber_first: int = 0
    subscriber_prefix: str = "4670"
    subscriber_digits: int = 7
    subscriber_order: str = "round-robin"   # or "random"
    octets: int = 1_000_000              # CC-Total-Octets of the Used-Service-Unit on U and T
    rating_group: int = 10
    event_ratio: float = 0.0             # fraction of sessions that are one CCR-EVENT
    rate: float | None = None            # requests/s in all; None: as fast as possible
    requests: int | None = None          # requests in all
    duration: float | None = 10.0        # seconds; run_load uses 10 when both bounds are None
    warmup: float = 0.0                  # seconds left out of CCR/s and latency
    processes: int = 1
    timeout: float = 10.0                # connect + CEA, the last answers, and the stall limit
    origin_realm: str = "localdomain"
    destination_realm: str = "localdomain"
    host_first: int = 0                  # Origin-Host numbering: load{host_first + n}.localdomain
    mscc_codes: bool = True              # also count MSCC-level Result-Codes
    seed: int | None = None
    progress: bool = True                # a progress line a second on stderr
    dictionaries: str | None = None      # *.dict folder (default: the shipped one)

    def validate(self) -> None:
        def need(cond, what):
            if not cond:
                raise ValueError(what)
        need(self.connections >= 1, "--connections must be at least 1")
        need(self.processes >= 1, "--processes must be at least 1")
        need(self.connections >= self.processes, "--connections must be at least --processes")
        need(self.sessions >= 1, "--sessions must be at least 1")
        need(self.updates >= 0, "--updates must be 0 or more")
        need(self.subscribers >= 1, "--subscribers must be at least 1")
        need(1 <= self.subscriber_digits <= 19, "--subscriber-digits must be 1..19")
        need(self.subscriber_first >= 0
             and self.subscriber_first + self.subscribers <= 10 ** self.subscriber_digits,
             "the subscriber indexes do not fit in --subscriber-digits digits")
        need(self.subscriber_order in ("round-robin", "random"),
             "--subscriber-order is round-robin or random")
        need(0.0 <= self.event_ratio <= 1.0, "--event-ratio must be within 0..1")
        need(self.rate is None or self.rate > 0, "--rate must be positive")
        need(self.requests is None or self.requests >= 1, "--requests must be at least 1")
        need(self.duration is None or self.duration > 0, "--duration must be positive")
        need(self.warmup >= 0, "--warmup must be 0 or more")
        need(self.duration is None or self.warmup < self.duration, "--warmup must be below --duration")
        need(self.timeout > 0, "--timeout must be positive")
        need(0 <= self.octets < 1 << 64, "--octets must fit in Unsigned64")


# ---------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------

def _walk(data: bytes, start: int, end: int):
    """(code, vendor flag, data offset, data length) of the AVPs in data[start:end]."""
    p = start
    while p + 8 <= end:
        code, fl = _AVP.unpack_from(data, p)
        length = fl & 0xFFFFFF
        hdr = 12 if fl & 0x80000000 else 8
        if length < hdr or p + length > end:
            raise ValueError(f"bad AVP length {length} at {p}")
        yield code, bool(fl & 0x80000000), p + hdr, length - hdr
        p += (length + 3) & ~3


class CcrTemplate:
    """One encoded CCR with the offsets of the values patched per request."""

    __slots__ = ("kind", "data", "sid_off", "num_off", "sub_off", "sub_digits", "session_id_head",
                 "subscription_head")

    def __init__(self, kind: int, msg: Message, session_id_head: str, subscription_head: str,
                 sub_digits: int):
        self.kind = kind
        self.data = msg.encode()
        self.sub_digits = sub_digits
        self.session_id_head = session_id_head
        self.subscription_head = subscription_head
        sid = num = sub = None
        data = self.data
        for code, vendor, off, length in _walk(data, 20, len(data)):
            if vendor:
                continue
            if code == AVP_SESSION_ID:
                sid = off + length - SESSION_DIGITS
            elif code == AVP_CC_REQUEST_NUMBER:
                num = off
            elif code == AVP_SUBSCRIPTION_ID:
                for c2, v2, off2, len2 in _walk(data, off, off + length):
                    if c2 == AVP_SUBSCRIPTION_ID_DATA and not v2:
                        sub = off2 + len2 - sub_digits
        if sid is None or num is None or sub is None:
            raise ValueError("template without Session-Id, CC-Request-Number or Subscription-Id-Data")
        self.sid_off, self.num_off, self.sub_off = sid, num, sub

    def write(self, out: bytearray, hbh: int, e2e: int, session: int, number: int, sub: bytes) -> None:
        """Append the request with these values to out (sub: the subscriber digits)."""
        base = len(out)
        out += self.data
        _IDS.pack_into(out, base + 12, hbh, e2e)
        p = base + self.sid_off
        out[p:p + SESSION_DIGITS] = b"%012d" % session
        _U32.pack_into(out, base + self.num_off, number)
        p = base + self.sub_off
        out[p:p + self.sub_digits] = sub

    def render(self, hbh: int, e2e: int, session: int, number: int, subscriber: int) -> bytes:
        out = bytearray()
        self.write(out, hbh, e2e, session, number, b"%0*d" % (self.sub_digits, subscriber))
        return bytes(out)

    def expected(self, session: int, number: int, subscriber: int) -> tuple[str, int, str]:
        return (f"{self.session_id_head}{session:0{SESSION_DIGITS}d}", number,
                f"{self.subscription_head}{subscriber:0{self.sub_digits}d}")


def build_templates(dictionary: Dictionary, options: LoadOptions, origin_host: str,
                    stamp: int) -> list[CcrTemplate]:
    """The I, U, T and E templates of one connection, checked by a decode."""
    o = options
    sid_head = f"{origin_host};{stamp};"
    sub_head = o.subscriber_prefix
    sid = sid_head + "0" * SESSION_DIGITS
    sub = sub_head + "0" * o.subscriber_digits

    def ccr(kind: int, context: str, extra: list) -> CcrTemplate:
        avps = [("Session-Id", sid), ("Origin-Host", origin_host), ("Origin-Realm", o.origin_realm),
                ("Destination-Realm", o.destination_realm), ("Auth-Application-Id", 4),
                ("Service-Context-Id", context), ("CC-Request-Type", CC_REQUEST_TYPE[kind]),
                ("CC-Request-Number", 0),
                ("Subscription-Id", [("Subscription-Id-Type", 0), ("Subscription-Id-Data", sub)])]
        msg = request(dictionary, "Credit-Control-Request", avps + extra, application_id=4)
        return CcrTemplate(kind, msg, sid_head, sub_head, o.subscriber_digits)

    usu = ("Used-Service-Unit", [("CC-Total-Octets", o.octets)])
    rg = ("Rating-Group", o.rating_group)
    templates = [
        ccr(K_I, "32251@3gpp.org", [
            ("Multiple-Services-Indicator", 1),
            ("Multiple-Services-Credit-Control", [("Requested-Service-Unit", []), rg])]),
        ccr(K_U, "32251@3gpp.org", [
            ("Multiple-Services-Credit-Control", [("Requested-Service-Unit", []), usu, rg])]),
        ccr(K_T, "32251@3gpp.org", [
            ("Termination-Cause", 1),
            ("Multiple-Services-Credit-Control", [usu, rg])]),
        ccr(K_E, "32274@3gpp.org", [
            ("Requested-Action", 0),
            ("Requested-Service-Unit", [("CC-Service-Specific-Units", 1)])]),
    ]
    for t in templates:
        verify_template(dictionary, t, options)
    return templates


def verify_template(dictionary: Dictionary, t: CcrTemplate, options: LoadOptions) -> None:
    """Patch the template with sample values and decode it with the grammar check."""
    top = 10 ** options.subscriber_digits - 1
    for session, number, subscriber in ((987654321012, 7, min(top, 1234567)), (1, 0, 0)):
        data = t.render(0x11223344, 0x55667788, session, number, subscriber)
        msg, errors = decode_message(data, dictionary, check=True)
        if errors:
            raise ValueError(f"CCR-{KINDS[t.kind]} template does not decode: {errors[0]}")
        sub = msg.find("Subscription-Id")
        got = (msg.get("Session-Id"), msg.get("CC-Request-Number"),
               sub.get("Subscription-Id-Data") if sub is not None else None)
        if got != t.expected(session, number, subscriber) or (msg.hop_by_hop, msg.end_to_end) != (
                0x11223344, 0x55667788) or msg.get("CC-Request-Type") != CC_REQUEST_TYPE[t.kind]:
            raise ValueError(f"CCR-{KINDS[t.kind]} template patched wrong: {got}")


# ---------------------------------------------------------------------------
# one driver process
# ---------------------------------------------------------------------------

class Slot:
    """One concurrent session of the workload."""

    __slots__ = ("conn", "session", "step", "kind", "sub", "sent_at")

    def __init__(self, conn):
        self.conn = conn
        self.session = 0
        self.step = 0            # next CC-Request-Number; 0: start a new session
        self.kind = K_I
        self.sub = b""
        self.sent_at = 0.0


class Stats:
    def __init__(self):
        self.sent = [0, 0, 0, 0]
        self.answered = [0, 0, 0, 0]
        self.codes = [{}, {}, {}, {}]          # command-level Result-Code -> count, per kind
        self.mscc_codes = [{}, {}, {}, {}]     # MSCC-level Result-Code -> count, per kind
        self.lat = [array.array("d"), array.array("d"), array.array("d"), array.array("d")]
        self.measured = 0                      # answers in the measured window


class LoadConnection(asyncio.Protocol):
    def __init__(self, driver: "Driver", index: int, origin_host: str):
        self.driver = driver
        self.index = index
        self.origin_host = origin_host
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.out = bytearray()
        self.pending: dict[int, Slot] = {}
        self.hbh = random.getrandbits(32)
        self.session = 0
        self.templates: list[CcrTemplate] = []
        self.open = False
        self.cea: asyncio.Future = driver.loop.create_future()
        self.dpa: asyncio.Future = driver.loop.create_future()
        self.closed: asyncio.Future = driver.loop.create_future()
        self.cea_result: int | None = None
        self.peer_host: str | None = None
        self.peer_disconnected = False

    # ---- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        d = self.driver
        local = LocalPeer(self.origin_host, d.options.origin_realm, product_name="ocs-loadgen",
                          origin_state_id=d.state_id)
        cer = build_cer(local, d.dictionary)
        cer.hop_by_hop, cer.end_to_end = self.next_hbh(), d.next_e2e()
        transport.write(cer.encode())

    def connection_lost(self, exc) -> None:
        self.open = False
        d = self.driver
        if not self.cea.done():
            self.cea.set_exception(ConnectionError(f"{self.origin_host}: connection closed before CEA"))
        if self.pending:
            d.lost += len(self.pending)
            d.outstanding -= len(self.pending)
            self.pending.clear()
            d.note(f"{self.origin_host}: connection lost with requests outstanding")
            d.check_done()
        if not self.dpa.done():
            self.dpa.set_exception(ConnectionError("closed before DPA"))
            self.dpa.exception()                   # retrieved: nobody may be waiting
        if not self.closed.done():
            self.closed.set_result(None)
        d.connection_lost(self)

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        n = len(data)
        pos = 0
        pending = self.pending
        on_answer = self.driver.on_answer
        while n - pos >= 20:
            w0, w1, _app, hbh, _e2e = _HDR.unpack_from(data, pos)
            length = w0 & 0xFFFFFF
            if w0 >> 24 != 1 or length < 20 or length & 3:
                self.driver.note(f"{self.origin_host}: broken frame header, closing")
                self.transport.abort()
                return
            end = pos + length
            if end > n:
                break
            if w1 & 0x80000000:
                self._on_request(bytes(data[pos:end]))
            else:
                slot = pending.pop(hbh, None)
                if slot is not None:
                    on_answer(slot, data, pos, end)
                else:
                    self._on_other_answer(bytes(data[pos:end]), w1 & 0xFFFFFF)
            pos = end
        self.buf = data[pos:] if pos < n else b""
        if self.out:
            self.flush()

    # ---- internals -------------------------------------------------------
    def next_hbh(self) -> int:
        h = self.hbh
        self.hbh = (h + 1) & 0xFFFFFFFF
        return h

    def flush(self) -> None:
        out = self.out
        self.out = bytearray()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _answer(self, req: Message, result_code: int, error: bool = False, extra=()) -> None:
        ans = req.answer(result_code, error=error)
        ans.extend([("Origin-Host", self.origin_host), ("Origin-Realm", self.driver.options.origin_realm)])
        ans.extend(extra)
        self.out += ans.encode()

    def _on_request(self, frame: bytes) -> None:
        d = self.driver
        msg, _ = decode_message(frame, d.dictionary, check=False)
        if msg.code == CMD_DWR:
            self._answer(msg, 2001)
        elif msg.code == CMD_DPR:
            self._answer(msg, 2001)
            self.peer_disconnected = True
            self.open = False
            d.note(f"{self.origin_host}: the node sent DPR")
        elif msg.code == CMD_CER:
            self._answer(msg, 5012, error=True)
        else:
            self._answer(msg, 3001, error=True)
        self.flush()

    def _on_other_answer(self, frame: bytes, code: int) -> None:
        d = self.driver
        if code == CMD_CER and not self.cea.done():
            msg, _ = decode_message(frame, d.dictionary, check=False)
            self.cea_result = msg.get("Result-Code")
            self.peer_host = msg.get("Origin-Host")
            if self.cea_result == 2001:
                self.open = True
                self.cea.set_result(self.cea_result)
            else:
                self.cea.set_exception(ConnectionError(
                    f"{self.origin_host}: CEA Result-Code {self.cea_result} from {self.peer_host}"))
        elif code == CMD_DPR:
            if not self.dpa.done():
                self.dpa.set_result(None)
        elif code != CMD_DWR:
            d.unmatched += 1

    async def disconnect(self, timeout: float) -> None:
        """DPR (cause REBOOTING), wait for the DPA at most timeout, close."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if not self.peer_disconnected:
            d = self.driver
            dpr = request(d.dictionary, "Disconnect-Peer-Request", [
                ("Origin-Host", self.origin_host), ("Origin-Realm", d.options.origin_realm),
                ("Disconnect-Cause", 0)], hop_by_hop=self.next_hbh(), end_to_end=d.next_e2e())
            self.open = False
            self.out += dpr.encode()
            self.flush()
            try:
                await asyncio.wait_for(asyncio.shield(self.dpa), timeout)
                d.dpa += 1
            except asyncio.TimeoutError:
                d.note(f"{self.origin_host}: no DPA within {timeout} s")
            except ConnectionError:
                pass
        t.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 1.0)
        except asyncio.TimeoutError:
            t.abort()


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


# ---------------------------------------------------------------------------
# partitioning, processes, merging
# ---------------------------------------------------------------------------

def _split(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


def partition(options: LoadOptions, duration: float | None) -> list[dict]:
    """What each driver process does: its Origin-Host numbers, sessions, request
    budget, rate and subscriber slice [lo, hi)."""
    o = options
    p = o.processes
    parts = []
    host = o.host_first
    sub = o.subscriber_first
    for i in range(p):
        nconn = _split(o.connections, p, i)
        nsub = _split(o.subscribers, p, i)
        if nsub == 0:                     # fewer subscribers than processes: share them all
            lo, hi = o.subscriber_first, o.subscriber_first + o.subscribers
        else:
            lo, hi = sub, sub + nsub
            sub += nsub
        parts.append({
            "index": i,
            "hosts": list(range(host, host + nconn)),
            "sessions": max(1, _split(o.sessions, p, i)),
            "requests": None if o.requests is None else _split(o.requests, p, i),
            "rate": None if o.rate is None else o.rate / p,
            "subscribers": (lo, hi),
            "duration": duration,
        })
        host += nconn
    return [x for x in parts if x["requests"] is None or x["requests"] > 0]


async def _run_part(options: LoadOptions, part: dict, shared=None, go=None, ready=None) -> dict:
    dictionary = load_directory(options.dictionaries)
    driver = Driver(options, part, dictionary, shared)
    await driver.connect()
    if ready is not None:
        ready()
    if go is not None:
        await go()
    return await driver.run()


def _child(options_dict: dict, part: dict, results, go_event, counters) -> None:
    """Entry point of a driver process (multiprocessing, spawn)."""
    options = LoadOptions(**options_dict)
    options.progress = False

    async def go():
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, go_event.wait, options.timeout + 30)
        if not ok:
            raise TimeoutError("no start signal from the parent")

    try:
        raw = asyncio.run(_run_part(options, part, (counters, part["index"]), go,
                                    lambda: results.put(("ready", part["index"], None))))
        results.put(("result", part["index"], raw))
    except BaseException as e:  # report to the parent whatever it is
        results.put(("error", part["index"], f"{type(e).__name__}: {e}"))


async def _run_processes(options: LoadOptions, parts: list[dict]) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    go_event = ctx.Event()
    counters = ctx.Array("q", 2 * len(parts), lock=False)
    opts = dataclasses.asdict(options)
    procs = [ctx.Process(target=_child, args=(opts, part, results, go_event, counters), daemon=True)
             for part in parts]
    for p in procs:
        p.start()
    raws: dict[int, dict] = {}
    errors: list[str] = []
    ready = 0
    started = None
    deadline = time.monotonic() + options.timeout + 30        # spawning + connecting
    prev = 0
    next_progress = None
    try:
        while len(raws) + len(errors) < len(parts):
            try:
                kind, index, payload = results.get_nowait()
            except queue_module.Empty:
                now = time.monotonic()
                if started is None and now > deadline:
                    errors.append("driver processes did not get ready in time")
                    break
                if all(not p.is_alive() for p in procs):
                    await asyncio.sleep(0.2)              # a last result may still be in the pipe
                    if results.empty():
                        errors.append("a driver process exited without a result")
                        break
                if started is not None and options.progress and now >= next_progress:
                    sent = sum(counters[2 * i] for i in range(len(parts)))
                    answered = sum(counters[2 * i + 1] for i in range(len(parts)))
                    print(f"[loadgen] {now - started:5.1f} s  requests {sent}  answers {answered}  "
                          f"rate {answered - prev}/s  ({len(parts)} processes)", file=sys.stderr, flush=True)
                    prev = answered
                    next_progress += 1.0
                await asyncio.sleep(0.02)
                continue
            if kind == "ready":
                ready += 1
                if ready == len(parts):
                    go_event.set()
                    started = time.monotonic()
                    next_progress = started + 1.0
            elif kind == "result":
                raws[index] = payload
            else:
                errors.append(f"process {index}: {payload}")
                go_event.set()                   # let the others run to their end rather than hang
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    if errors:
        raise RuntimeError("; ".join(errors))
    return [raws[i] for i in sorted(raws)]


def _percentiles(values: array.array) -> dict:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    s = sorted(values)
    n = len(s)

    def q(f):                          # nearest rank
        k = max(0, min(n - 1, int(-(-f * n // 1)) - 1))
        return round(s[k] * 1000.0, 3)
    return {"count": n, "p50": q(0.50), "p95": q(0.95), "p99": q(0.99),
            "max": round(s[-1] * 1000.0, 3), "mean": round(sum(s) / n * 1000.0, 3)}


def _add_counts(into: dict, counts: dict) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v


def merge(raws: list[dict], options: LoadOptions | None = None) -> dict:
    """The result of one or more driver processes (their `raw_result`s)."""
    lat = [array.array("d") for _ in KINDS]
    by_type = {}
    codes: dict = {}
    mscc: dict = {}
    for k, name in enumerate(KINDS):
        t_codes: dict = {}
        t_mscc: dict = {}
        for r in raws:
            a = array.array("d")
            a.frombytes(r["lat"][k])
            lat[k].extend(a)
            _add_counts(t_codes, r["codes"][k])
            _add_counts(t_mscc, r["mscc_codes"][k])
        _add_counts(codes, t_codes)
        _add_counts(mscc, t_mscc)
        by_type[name] = {"requests": sum(r["sent"][k] for r in raws),
                         "answers": sum(r["answered"][k] for r in raws),
                         "result_codes": dict(sorted(t_codes.items())),
                         "mscc_result_codes": dict(sorted(t_mscc.items())),
                         "latency_ms": _percentiles(lat[k])}
    all_lat = array.array("d")
    for a in lat:
        all_lat.extend(a)
    measured = sum(r["measured"] for r in raws)
    t0 = min(r["t_measure"] for r in raws) if raws else 0.0
    t1 = max(r["t_end"] for r in raws) if raws else 0.0
    elapsed = max(t1 - t0, 1e-9)
    requests = sum(sum(r["sent"]) for r in raws)
    answers = sum(sum(r["answered"]) for r in raws)
    per_process = []
    for r in raws:
        e = max(r["t_end"] - r["t_measure"], 1e-9)
        per_process.append({"index": r["index"], "connections": len(r["connections"]),
                            "sessions": r["sessions"], "requests": sum(r["sent"]),
                            "answers": sum(r["answered"]), "result_codes": _sum_kinds(r["codes"]),
                            "ccr_per_s": round(r["measured"] / e, 1), "stop_reason": r["stop_reason"]})
    out = {
        "requests": requests,
        "answers": answers,
        "unanswered": requests - answers,
        "result_codes": dict(sorted(codes.items())),
        "mscc_result_codes": dict(sorted(mscc.items())),
        "ccr_per_s": round(measured / elapsed, 1) if measured else 0.0,
        "elapsed_s": round(elapsed, 3),
        "measured_answers": measured,
        "latency_ms": {"all": _percentiles(all_lat), **{n: by_type[n]["latency_ms"] for n in KINDS}},
        "by_type": by_type,
        "sessions": sum(r["sessions"] for r in raws),
        "sessions_started": sum(r["sessions_started"] for r in raws),
        "sessions_completed": sum(r["sessions_completed"] for r in raws),
        "connections": [c for r in raws for c in r["connections"]],
        "dpa_received": sum(r["dpa"] for r in raws),
        # CPU the driver itself used (all its processes), per request: to check it is not the bottleneck
        "driver_cpu_s": round(sum(r["cpu_s"] for r in raws), 3),
        "driver_cpu_us_per_request": round(sum(r["cpu_s"] for r in raws) * 1e6 / requests, 1) if requests else None,
        "lost": sum(r["lost"] for r in raws),
        "unmatched_answers": sum(r["unmatched"] for r in raws),
        "processes": len(raws),
        "per_process": per_process,
        "stop_reason": ", ".join(sorted({r["stop_reason"] for r in raws})),
        "notes": [n for r in raws for n in r["notes"]],
    }
    if options is not None:
        out["options"] = dataclasses.asdict(options)
    return out


def _sum_kinds(per_kind: list[dict]) -> dict:
    out: dict = {}
    for d in per_kind:
        _add_counts(out, d)
    return dict(sorted(out.items()))


async def run_load(options) -> dict:
    """Run the load described by options (LoadOptions or a dict of its fields) and
    return the merged result (see `merge`)."""
    if isinstance(options, dict):
        options = LoadOptions(**options)
    else:
        options = dataclasses.replace(options)
    options.validate()
    duration = options.duration
    if duration is None and options.requests is None:
        duration = 10.0
    parts = partition(options, duration)
    if len(parts) == 1:
        raws = [await _run_part(options, parts[0])]
    else:
        raws = await _run_processes(options, parts)
    return merge(raws, options)


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    d = LoadOptions()
    p = argparse.ArgumentParser(prog="loadgen", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--host", default=d.host, help="node address")
    a("--port", type=int, default=d.port, help="node TCP port")
    a("--connections", "-c", type=int, default=d.connections,
      help="connections in all (spread over the processes), Origin-Host load{n}.localdomain")
    a("--sessions", "-s", type=int, default=d.sessions, help="concurrent sessions in all")
    a("--updates", "-u", type=int, default=d.updates, help="CCR-UPDATEs per session")
    a("--subscribers", type=int, default=d.subscribers, help="number of subscribers used")
    a("--subscriber-first", type=int, default=d.subscriber_first, help="first subscriber index")
    a("--subscriber-prefix", default=d.subscriber_prefix, help="Subscription-Id-Data prefix")
    a("--subscriber-digits", type=int, default=d.subscriber_digits,
      help="digits of the zero-padded subscriber index after the prefix")
    a("--subscriber-order", choices=["round-robin", "random"], default=d.subscriber_order)
    a("--octets", type=int, default=d.octets, help="CC-Total-Octets of the Used-Service-Unit on U and T")
    a("--rating-group", type=int, default=d.rating_group)
    a("--event-ratio", type=float, default=d.event_ratio, help="fraction of sessions that are one CCR-EVENT")
    a("--rate", "-r", type=float, default=None, help="target requests/s in all (default: as fast as possible)")
    a("--requests", "-n", type=int, default=None, help="stop after this many requests in all")
    a("--duration", "-d", type=float, default=None,
      help="stop after this many seconds (default 10 unless --requests is given)")
    a("--warmup", type=float, default=d.warmup, help="seconds left out of CCR/s and latency")
    a("--processes", "-p", type=int, default=d.processes, help="driver processes")
    a("--timeout", type=float, default=d.timeout,
      help="seconds for connect+CEA, for the last answers, and without any answer before giving up")
    a("--origin-realm", default=d.origin_realm)
    a("--destination-realm", default=d.destination_realm)
    a("--host-first", type=int, default=d.host_first, help="number of the first Origin-Host load{n}")
    a("--no-mscc-codes", action="store_true", help="do not count MSCC-level Result-Codes")
    a("--seed", type=int, default=None, help="seed for random subscribers and events")
    a("--dictionaries", default=None, help="folder of *.dict files")
    a("--json", action="store_true", help="print the result as JSON")
    a("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    return p


def options_from_args(args) -> LoadOptions:
    return LoadOptions(
        host=args.host, port=args.port, connections=args.connections, sessions=args.sessions,
        updates=args.updates, subscribers=args.subscribers, subscriber_first=args.subscriber_first,
        subscriber_prefix=args.subscriber_prefix, subscriber_digits=args.subscriber_digits,
        subscriber_order=args.subscriber_order, octets=args.octets, rating_group=args.rating_group,
        event_ratio=args.event_ratio, rate=args.rate, requests=args.requests,
        duration=args.duration if args.duration is not None else (None if args.requests else 10.0),
        warmup=args.warmup, processes=args.processes, timeout=args.timeout,
        origin_realm=args.origin_realm, destination_realm=args.destination_realm,
        host_first=args.host_first, mscc_codes=not args.no_mscc_codes, seed=args.seed,
        progress=not args.quiet, dictionaries=args.dictionaries)


def _codes_text(codes: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in codes.items()) or "none"


def format_result(r: dict) -> str:
    o = r.get("options", {})
    lines = [
        f"target        {o.get('host')}:{o.get('port')}  {len(r['connections'])} connection(s), "
        f"{r['sessions']} sessions, {r['processes']} process(es), "
        f"{'rate ' + str(o.get('rate')) + '/s' if o.get('rate') else 'as fast as possible'}",
        f"requests      {r['requests']}  answers {r['answers']}  unanswered {r['unanswered']}"
        f"  (stop: {r['stop_reason']})",
        f"result codes  {_codes_text(r['result_codes'])}",
        f"MSCC codes    {_codes_text(r['mscc_result_codes'])}",
        f"sessions      started {r['sessions_started']}  completed {r['sessions_completed']}",
        f"throughput    {r['ccr_per_s']:.0f} CCR/s over {r['elapsed_s']:.2f} s  (driver CPU "
        f"{r['driver_cpu_us_per_request']} us/request)",
        "latency ms     count      p50      p95      p99      max",
    ]
    for name in ("all",) + KINDS:
        s = r["latency_ms"][name]
        if s["count"]:
            lines.append(f"  {name:10} {s['count']:8} {s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} "
                         f"{s['max']:8.2f}")
    for name in KINDS:
        t = r["by_type"][name]
        if t["requests"]:
            lines.append(f"  CCR-{name}: {t['requests']} sent, codes {_codes_text(t['result_codes'])}")
    for n in r["notes"][:10]:
        lines.append(f"note: {n}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = options_from_args(args)
    try:
        options.validate()
    except ValueError as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run_load(options))
    except (ConnectionError, OSError, RuntimeError, TimeoutError) as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_result(result))
    return 0 if result["unanswered"] == 0 and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
