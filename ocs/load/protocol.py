"""One connection of the load generator: a raw asyncio.Protocol (not the node's
DiameterConnection) that sends the CER and waits for the CEA, answers DWR and
DPR from the node, frames the answers by their header and hands each CCA to
its `Driver` by Hop-by-Hop id, and disconnects with DPR at the end; plus `Slot`,
one concurrent session of the workload (what an outstanding request maps to).
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from ..diameter.capabilities import LocalPeer, build_cer
from ..diameter.message import Message, decode_message, request
from .common import _HDR, CMD_CER, CMD_DPR, CMD_DWR, K_I
from .templates import CcrTemplate

if TYPE_CHECKING:
    from .driver import Driver


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
