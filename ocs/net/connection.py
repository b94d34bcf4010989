"""asyncio shell around one sans-I/O `PeerConnection` (server or client side).

The protocol feeds received bytes and timer expiries into the core, drains its
events, runs handlers for RequestReceived as tasks, and writes whatever the core
wants sent. It holds no protocol logic of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time

import attrs

from ..diameter.answers import error_answer
from ..diameter.capabilities import LocalPeer
from ..diameter.dictionary import Dictionary
from ..diameter.duplicates import DuplicateCache, EndToEndIds
from ..diameter.events import (AnswerReceived, ConnectionClosed, DisconnectRequested, ErrorAnswered,
                               PeerOpened, RequestFailed, RequestReceived, WatchdogChanged)
from ..diameter.labels import command_name
from ..diameter.message import Message
from ..diameter.peer import PeerConnection, PeerState
from .application import HandlerRegistry, RequestContext
from .peers import PeerTable

log = logging.getLogger("ocs.net")
_ids = itertools.count(1)


@attrs.define
class NodeContext:
    """Everything connections of one node share."""

    local: LocalPeer
    dictionary: Dictionary
    registry: HandlerRegistry = attrs.Factory(HandlerRegistry)
    duplicates: DuplicateCache = attrs.Factory(DuplicateCache)
    allowed_peers: frozenset | None = None
    tw: float = 30.0
    cer_timeout: float = 10.0
    dpa_timeout: float = 5.0
    max_message_length: int = 1 << 20
    rng: random.Random = attrs.Factory(random.Random)
    # one End-to-End id sequence for all connections of the node (RFC 6733 §3)
    peers: PeerTable = attrs.Factory(PeerTable)
    # this process's share of the node's End-to-End id space (worker index, workers)
    worker: tuple = (0, 1)
    end_to_end_ids: EndToEndIds = attrs.Factory(
        lambda self: EndToEndIds(time.time(), self.rng, time.monotonic(), worker=self.worker),
        takes_self=True)
    # the process's metrics (ocs.metrics.tally.Tally), or None
    metrics: object = None


class DiameterConnection(asyncio.Protocol):
    def __init__(self, node: NodeContext, initiator: bool, reopened: bool = False):
        self.node = node
        self.initiator = initiator
        self.reopened = reopened
        self.id = next(_ids)
        self.peer: PeerConnection | None = None
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.opened: asyncio.Future = self.loop.create_future()
        self.closed: asyncio.Future = self.loop.create_future()
        self._waiters: dict[int, asyncio.Future] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.remote = None
        self.disconnect_cause: int | None = None      # set when the peer sends DPR
        self._out: list[bytes] = []                    # bytes to write at the end of this loop step
        self._flush_scheduled = False

    # ---- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.remote = transport.get_extra_info("peername")
        n = self.node
        self.peer = PeerConnection(
            n.local, n.dictionary, initiator=self.initiator, now=self.loop.time(),
            supports=n.registry.supports, allowed_peers=n.allowed_peers, duplicates=n.duplicates,
            tw=n.tw, cer_timeout=n.cer_timeout, dpa_timeout=n.dpa_timeout,
            max_message_length=n.max_message_length, rng=n.rng, reopened=self.reopened,
            end_to_end_ids=n.end_to_end_ids, admit=lambda peer: n.peers.admit(self, peer),
            metrics=n.metrics)
        log.debug("connection %d from %s", self.id, self.remote)
        self._pump()

    def pause_writing(self) -> None:
        # the peer is not reading our answers: stop reading its requests until it does,
        # so our write buffer stays bounded (asyncio's high-water mark)
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.peer.receive_data(data, self.loop.time())
        self._pump()

    def eof_received(self) -> bool:
        self.peer.receive_data(b"", self.loop.time())
        self._pump()
        return False

    def connection_lost(self, exc) -> None:
        if self.peer is not None:
            self.peer.receive_data(b"", self.loop.time())
            self._pump()
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        self._finish(f"transport lost: {exc}" if exc else "transport closed")

    # ---- API -------------------------------------------------------------
    async def request(self, msg: Message, timeout: float = 10.0) -> Message:
        """Send an application request and wait for its answer."""
        hbh = self.peer.send_request(msg)
        fut = self.loop.create_future()
        self._waiters[hbh] = fut
        self._pump()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.pop(hbh, None)
            if self.peer is not None:
                self.peer.forget_request(hbh)      # a late answer is discarded

    async def disconnect(self, timeout: float | None = None) -> None:
        """DPR, wait for DPA (or the DPA timeout), close."""
        if self.peer is not None and self.peer.state is not PeerState.CLOSED:
            self.peer.disconnect(self.loop.time())
            self._pump()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed),
                                   timeout if timeout is not None else self.node.dpa_timeout + 1)
        except asyncio.TimeoutError:
            if self.transport is not None:
                self.transport.abort()

    # ---- internals -------------------------------------------------------
    def _pump(self) -> None:
        peer = self.peer
        while True:
            event = peer.next_event()
            if event is None:
                break
            self._on_event(event)
        data = peer.data_to_send()
        if data:
            # answers completed in the same loop step leave in one write (one syscall
            # for a whole group-commit batch instead of one per answer)
            self._out.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_soon(self._flush)
        if peer.state is PeerState.CLOSED:
            self._flush()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()
            return
        self._arm_timer()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()

    def _arm_timer(self) -> None:
        when = self.peer.get_timer()
        if self._timer is not None:
            if when is not None and self._timer.when() == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.peer.handle_timer(self.loop.time())
        self._pump()

    def _log_extra(self) -> dict:
        peer = self.peer.peer if self.peer is not None else None
        return {"connection": self.id, "peer": peer.origin_host if peer else str(self.remote)}

    def _on_event(self, event) -> None:
        if isinstance(event, RequestReceived):
            handler = self.node.registry.get(event.message.application_id, event.message.code)
            begin = getattr(handler, "begin", None)
            if begin is not None:
                self._begin(begin, event.message)
                return
            task = self.loop.create_task(self._handle(event.message, self.loop.time()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(event, AnswerReceived):
            fut = self._waiters.get(event.message.hop_by_hop)
            if fut is not None and not fut.done():
                fut.set_result(event.message)
        elif isinstance(event, RequestFailed):
            fut = self._waiters.get(event.hop_by_hop)
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError(event.reason))
        elif isinstance(event, PeerOpened):
            log.info("peer %s (%s) open on connection %d from %s", event.peer.origin_host,
                     event.peer.origin_realm, self.id, self.remote, extra=self._log_extra())
            self.node.peers.opened(self, event.peer)
            if not self.opened.done():
                self.opened.set_result(event.peer)
        elif isinstance(event, ConnectionClosed):
            log.info("connection %d closed: %s", self.id, event.reason, extra=self._log_extra())
            if not self.opened.done():
                self.opened.set_exception(ConnectionError(event.reason))
                self.opened.exception()   # retrieved: nobody may be waiting
        elif isinstance(event, ErrorAnswered):
            log.info("connection %d: answered command %d with %d: %s", self.id,
                     event.command_code, event.result_code, event.reason, extra=self._log_extra())
        elif isinstance(event, DisconnectRequested):
            self.disconnect_cause = event.cause
            log.info("connection %d: the peer sent DPR (Disconnect-Cause %s)", self.id, event.cause,
                     extra=self._log_extra())
        elif isinstance(event, WatchdogChanged):
            log.log(logging.INFO if event.state in ("OKAY", "DOWN") else logging.WARNING,
                    "connection %d: watchdog %s", self.id, event.state, extra=self._log_extra())

    async def _handle(self, msg: Message, received_at: float) -> None:
        handler = self.node.registry.get(msg.application_id, msg.code)
        ctx = RequestContext(self.peer.peer, self.id, received_at)
        try:
            answer = await handler(msg, ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler for command %d failed", msg.code,
                          extra=dict(self._log_extra(), session_id=msg.get("Session-Id")))
            answer = error_answer(self.node.local, msg, 5012, "internal error")
        if self.node.metrics is not None:
            self.node.metrics.inc("ocs_diameter_answers_total",
                                  (command_name(msg.code), "", str(answer.get("Result-Code", ""))))
        self.peer.send_answer(answer)
        self._pump()

    def _begin(self, begin, msg: Message) -> None:
        """A handler with `begin(msg, ctx, respond)` answers through a callback: no
        task or coroutine per request on the hot path."""
        ctx = RequestContext(self.peer.peer, self.id, self.loop.time())

        def respond(answer) -> None:
            if answer is None:
                answer = error_answer(self.node.local, msg, 5012, "internal error")
            if self.peer is not None:
                self.peer.send_answer(answer)
                self._pump()
        try:
            begin(msg, ctx, respond)
        except Exception:
            log.exception("handler for command %d failed", msg.code,
                          extra=dict(self._log_extra(), session_id=msg.get("Session-Id")))
            respond(None)

    def abort(self, reason: str) -> None:
        """Drop the transport at once (no DPR): for a connection known to be stale."""
        log.info("connection %d aborted: %s", self.id, reason, extra=self._log_extra())
        if self.transport is not None:
            self.transport.abort()

    def _finish(self, reason: str) -> None:
        self.node.peers.closed(self)
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(reason))
            self.opened.exception()
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(ConnectionError(reason))
        if not self.closed.done():
            self.closed.set_result(reason)
