"""One Diameter transport connection, sans-I/O: bytes in, events out, bytes to send.

Implements the parts of the RFC 6733 §5.6 peer state machine that one
connection owns (election between two connections to the same peer is the
owner's business; the node only accepts connections in this release):

| State      | Event                         | Action                              | Next       |
|------------|-------------------------------|-------------------------------------|------------|
| Wait-CER   | R-Conn-CER, accepted          | Process-CER, R-Snd-CEA (2001)       | R-Open     |
| Wait-CER   | R-Conn-CER, unknown peer      | CEA 3010 (E bit), disconnect        | Closed     |
| Wait-CER   | R-Conn-CER, no common app     | CEA 5010, disconnect                | Closed     |
| Wait-CER   | R-Conn-CER, peer already open | R-Reject (disconnect, no CEA)       | Closed     |
| Wait-CER   | anything but CER / Timeout    | disconnect                          | Closed     |
| Wait-I-CEA | I-Rcv-CEA (2001)              | Process-CEA                         | I-Open     |
| Wait-I-CEA | I-Rcv-Non-CEA / Timeout       | Error                               | Closed     |
| *-Open     | Rcv-DWR                       | Process-DWR, Snd-DWA                | (same)     |
| *-Open     | Rcv-DWA                       | Process-DWA                         | (same)     |
| *-Open     | Rcv-Message                   | Process (checks below)              | (same)     |
| *-Open     | Stop                          | Snd-DPR                             | Closing    |
| *-Open     | Rcv-DPR                       | Snd-DPA                             | Closing    |
| *-Open     | Peer-Disc                     | Disc                                | Closed     |
| Closing    | Rcv-DPA / Timeout / Peer-Disc | Disc                                | Closed     |

Checks on a received request, first failure answered (RFC 6733 §6.1, §7):
E bit set, or P bit on CER/DWR/DPR -> 3008; application not in common -> 3007; no handler for
(application, command) -> 3001; AVP/grammar errors -> 5xxx with Failed-AVP (not
cached: a broken request's values may not decode); duplicate (Origin-Host,
End-to-End) -> the cached answer with the new Hop-by-Hop id; Destination-Host
not us -> 3002; Destination-Realm not served -> 3003. Only then RequestReceived.
3009 (invalid AVP bits) is never sent: reserved AVP bits are ignored as §4.1
says, and the sources disagree on the M bit of many 3GPP AVPs, so a mismatch
against the dictionary is accepted (liberal receiver).
The RFC 3539 watchdog runs while open (see watchdog.py).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from typing import Callable

from . import watchdog as wd
from .answers import error_answer, result_code_of
from .labels import request_labels
from .avp import AvpStructureError
from .capabilities import (LocalPeer, build_cea, build_cer, is_cer, peer_identity,
                           vendor_specific_application_error)
from .datatypes import ValueProblem
from .dictionary import Dictionary
from .duplicates import DuplicateCache, EndToEndIds
from .errors import FramingError
from .events import (AnswerReceived, ConnectionClosed, DisconnectRequested, ErrorAnswered, Event,
                     PeerIdentity, PeerOpened, RequestFailed, RequestReceived, WatchdogChanged)
from .framing import DEFAULT_MAX_LENGTH, Framer
from .message import FLAG_E, FLAG_P, FLAG_R, Message, decode_message, parse_header, request

CER, DWR, DPR = 257, 280, 282
DISCONNECT_REBOOTING = 0


class PeerState(enum.Enum):
    WAIT_CER = "Wait-CER"
    WAIT_I_CEA = "Wait-I-CEA"
    R_OPEN = "R-Open"
    I_OPEN = "I-Open"
    CLOSING = "Closing"
    CLOSED = "Closed"


_OPEN = (PeerState.R_OPEN, PeerState.I_OPEN)


class PeerConnection:
    """See the module docstring. Times are seconds on any monotonic clock."""

    def __init__(self, local: LocalPeer, dictionary: Dictionary, *, initiator: bool, now: float,
                 supports: Callable[[int, int], bool] = lambda app, code: False,
                 allowed_peers: frozenset[str] | None = None,
                 duplicates: DuplicateCache | None = None, tw: float = wd.TW_DEFAULT,
                 cer_timeout: float = 10.0, dpa_timeout: float = 5.0,
                 max_message_length: int = DEFAULT_MAX_LENGTH,
                 rng: random.Random | None = None, reopened: bool = False,
                 end_to_end_ids: EndToEndIds | None = None,
                 admit: Callable[[PeerIdentity], bool] | None = None,
                 metrics=None):
        self.local = local
        # counts requests received and the answers this object makes itself (base
        # protocol, protocol errors) into an ocs.metrics.tally.Tally; None: no counting
        self.metrics = metrics
        self.dictionary = dictionary
        self.initiator = initiator
        self.supports = supports
        self.allowed_peers = (None if allowed_peers is None
                              else frozenset(h.lower() for h in allowed_peers))
        self.duplicates = duplicates if duplicates is not None else DuplicateCache()
        self.admit = admit                # the owner's one-connection-per-peer rule
        self.peer: PeerIdentity | None = None
        self._rng = rng or random.Random()
        self._framer = Framer(max_message_length)
        self._events: deque[Event] = deque()
        self._out: list[bytes] = []
        self._now = now
        self._cer_timeout = cer_timeout
        self._dpa_timeout = dpa_timeout
        self._watchdog = wd.Watchdog(tw, self._rng)
        self._reopened = reopened
        self._hbh = self._rng.getrandbits(32)
        # End-to-End ids must be unique per node, not per connection (RFC 6733 §3)
        self._e2e_ids = end_to_end_ids or EndToEndIds(0, self._rng)
        self._pending: dict[int, bool] = {}          # our requests: hbh -> is application request
        # their requests being handled: (hbh, e2e) -> duplicate key
        self._inbound: dict[tuple[int, int], tuple[str, int]] = {}
        self._deadline: float | None = now + cer_timeout
        if initiator:
            self.state = PeerState.WAIT_I_CEA
            self._send_request(build_cer(local, dictionary), internal=True)
        else:
            self.state = PeerState.WAIT_CER

    # ---- owner API -------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> None:
        """Feed received bytes; b"" means the peer closed the transport."""
        self._now = now
        if self.state is PeerState.CLOSED:
            return
        if not data:
            self._close("peer closed the connection")
            return
        frames, error = self._framer.feed(data)
        for frame in frames:
            if self.state is PeerState.CLOSED:
                return
            try:
                self._on_frame(frame)
            except (ValueProblem, AvpStructureError, RecursionError) as e:
                # a backstop: every read of peer data is meant to be guarded; if one
                # is not, this connection ends, never the process
                self._events.append(ErrorAnswered(0, 5012, f"unexpected decode failure: {e!r}"))
                self._close(f"unexpected decode failure: {e!r}")
                return
        if error is not None and self.state is not PeerState.CLOSED:
            self._on_framing_error(error)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def get_timer(self) -> float | None:
        times = [t for t in (self._deadline, self._watchdog.deadline if self.state in _OPEN else None)
                 if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        if self.state is PeerState.CLOSED:
            return
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            what = {PeerState.WAIT_CER: "no CER", PeerState.WAIT_I_CEA: "no CEA",
                    PeerState.CLOSING: "no DPA or disconnect"}.get(self.state, "timeout")
            self._close(f"{what} in time")
            return
        if self.state in _OPEN:
            self._watchdog_actions(self._watchdog.timer(now))

    def send_request(self, msg: Message) -> int:
        """Send an application request; returns its Hop-by-Hop id."""
        if self.state not in _OPEN:
            raise RuntimeError(f"cannot send a request in state {self.state.value}")
        return self._send_request(msg, internal=False)

    def forget_request(self, hop_by_hop: int) -> None:
        """We stopped waiting for this answer (timeout); a late one is discarded."""
        self._pending.pop(hop_by_hop, None)

    def send_answer(self, msg: Message) -> None:
        """Send the answer to a RequestReceived (matched by Hop-by-Hop and End-to-End id)."""
        if self.state is PeerState.CLOSED:
            return
        data = msg.encode()
        key = self._inbound.pop((msg.hop_by_hop, msg.end_to_end), None)
        if key is not None:
            self.duplicates.complete(key, self._now, data)
        self._out.append(data)

    def disconnect(self, now: float, cause: int = DISCONNECT_REBOOTING) -> None:
        """Graceful stop: DPR, then close on DPA or after the DPA timeout."""
        self._now = now
        if self.state in _OPEN:
            self._send_request(request(self.dictionary, "Disconnect-Peer-Request", [
                ("Origin-Host", self.local.origin_host), ("Origin-Realm", self.local.origin_realm),
                ("Disconnect-Cause", cause)]), internal=True)
            self.state = PeerState.CLOSING
            self._deadline = now + self._dpa_timeout
        elif self.state is not PeerState.CLOSED:
            self._close("disconnected locally")

    @property
    def watchdog_state(self) -> str:
        return self._watchdog.state

    # ---- internals -------------------------------------------------------
    def _send_request(self, msg: Message, internal: bool) -> int:
        self._hbh = (self._hbh + 1) & 0xFFFFFFFF
        msg.hop_by_hop = self._hbh
        if not msg.end_to_end:
            msg.end_to_end = self._e2e_ids.next(self._now)
        self._pending[msg.hop_by_hop] = not internal
        self._out.append(msg.encode())
        return msg.hop_by_hop

    def _close(self, reason: str) -> None:
        if self.state is PeerState.CLOSED:
            return
        self.state = PeerState.CLOSED
        self._deadline = None
        was = self._watchdog.state
        self._watchdog.connection_down()
        if was in (wd.OKAY, wd.SUSPECT, wd.REOPEN):
            self._events.append(WatchdogChanged(wd.DOWN))
        for hbh, is_app in self._pending.items():
            if is_app:
                self._events.append(RequestFailed(hbh, reason))
        self._pending.clear()
        for key in self._inbound.values():
            self.duplicates.forget(key)
        self._inbound.clear()
        self._events.append(ConnectionClosed(reason))

    def _on_framing_error(self, e: FramingError) -> None:
        # answered (5011/5015) only on an open connection and only for a request;
        # before the CER, anything but a CER just closes the connection
        if self.state in _OPEN and e.header is not None and e.header[4] & FLAG_R:
            _, _, flags, code, app, hbh, e2e = parse_header(e.header)
            req = Message(self.dictionary, code, flags, app, hbh, e2e)
            self._out.append(error_answer(self.local, req, e.result_code, e.reason).encode())
            self._count_answer(req, e.result_code)
        self._events.append(ErrorAnswered(0, e.result_code, e.reason))
        self._close(f"framing error: {e.reason}")

    def _on_frame(self, frame: bytes) -> None:
        msg, errors = decode_message(frame, self.dictionary)
        if self.metrics is not None and msg.is_request:
            self.metrics.inc("ocs_diameter_requests_total", request_labels(msg))
        state = self.state
        if state is PeerState.WAIT_CER:
            if not is_cer(msg):
                self._close("first message was not a CER")
            else:
                self._on_cer(msg, errors)
            return
        if state is PeerState.WAIT_I_CEA:
            if msg.code != CER or msg.is_request:
                self._close("expected a CEA")
            elif msg.hop_by_hop not in self._pending:
                return                    # unknown Hop-by-Hop: discard (§6.2), keep waiting
            elif errors:
                self._close(f"invalid CEA: {errors[0].result_code} {errors[0].message}")
            else:
                self._on_cea(msg)
            return
        deliver, actions = self._watchdog.received(self._now, msg.code == DWR and not msg.is_request)
        self._watchdog_actions(actions)
        if not deliver:
            return
        if msg.is_request:
            self._on_request(msg, errors)
        else:
            self._on_answer(msg)

    def _on_cer(self, cer: Message, errors) -> None:
        if cer.flags & (FLAG_E | FLAG_P):
            reason = "E or P bit set in a CER"
            self._refuse(build_cea(self.local, cer, 3008, error=True, error_message=reason), 3008, reason)
            return
        err = errors[0] if errors else vendor_specific_application_error(cer)
        if err is not None:
            self._refuse(build_cea(self.local, cer, err.result_code, failed_avp=err.failed_avp,
                                   error_message=err.message), err.result_code, err.message)
            return
        peer = peer_identity(cer, self.local)
        if self.allowed_peers is not None and peer.origin_host.lower() not in self.allowed_peers:
            self._refuse(build_cea(self.local, cer, 3010, error=True,
                                   error_message=f"{peer.origin_host} is not a configured peer"),
                         3010, f"unknown peer {peer.origin_host}")
            return
        if not peer.common_application_ids:
            self._refuse(build_cea(self.local, cer, 5010, error_message="no common application"),
                         5010, "no common application")
            return
        if self.admit is not None and not self.admit(peer):
            # R-Open + R-Conn-CER -> R-Reject: the new transport is closed, no CEA
            self._close(f"R-Reject: {peer.origin_host} already has an open connection")
            return
        self._out.append(build_cea(self.local, cer, 2001).encode())
        self._count_answer(cer, 2001)
        self._opened(peer, PeerState.R_OPEN)

    def _refuse(self, cea: Message, code: int, reason: str) -> None:
        self._out.append(cea.encode())
        self._count_answer(cea, code)
        self._events.append(ErrorAnswered(CER, code, reason))
        self._close(f"CER refused: {reason}")

    def _on_cea(self, cea: Message) -> None:
        self._pending.pop(cea.hop_by_hop, None)
        code = cea.get("Result-Code")
        if code != 2001:
            self._close(f"CEA with Result-Code {code}")
            return
        peer = peer_identity(cea, self.local)
        if not peer.common_application_ids:
            self._close("no common application in the CEA")
            return
        self._opened(peer, PeerState.I_OPEN)

    def _opened(self, peer: PeerIdentity, state: PeerState) -> None:
        self.peer = peer
        self.state = state
        self._deadline = None
        self._events.append(PeerOpened(peer))
        self._watchdog_actions(self._watchdog.connection_up(self._now, self._reopened))

    def _watchdog_actions(self, actions: list[str]) -> None:
        for action in actions:
            if action == wd.SEND_DWR:
                # at most one DWR is ever pending: the watchdog sends none while Pending
                self._send_request(request(self.dictionary, "Device-Watchdog-Request", [
                    ("Origin-Host", self.local.origin_host),
                    ("Origin-Realm", self.local.origin_realm)]), internal=True)
            elif action == wd.FAILOVER:
                self._events.append(WatchdogChanged(wd.SUSPECT))
            elif action == wd.FAILBACK:
                self._events.append(WatchdogChanged(wd.OKAY))
            elif action == wd.CLOSE:
                self._events.append(WatchdogChanged(wd.DOWN))
                self._close("watchdog: no answer to DWR")

    def _on_answer(self, msg: Message) -> None:
        is_app = self._pending.pop(msg.hop_by_hop, None)
        if is_app is None:
            return                        # unknown Hop-by-Hop: discard (§6.2)
        if msg.code == DPR and self.state is PeerState.CLOSING:
            self._close("DPA received")
        elif is_app:
            self._events.append(AnswerReceived(msg))

    def _on_request(self, msg: Message, errors) -> None:
        code = msg.code
        if msg.flags & FLAG_E:
            self._reply_error(msg, 3008, "E bit set in a request")
            return
        if msg.flags & FLAG_P and code in (CER, DWR, DPR):
            self._reply_error(msg, 3008, "P bit set on a message that must not be proxied")
            return
        if code == DWR:
            self._answer_base(msg, errors[0] if errors else None)
            return
        if code == DPR:
            self._answer_base(msg, errors[0] if errors else None)
            self.state = PeerState.CLOSING
            self._deadline = self._now + self._dpa_timeout
            self._events.append(DisconnectRequested(None if errors else msg.get("Disconnect-Cause")))
            return
        if code == CER:
            reason = "capabilities were already exchanged on this connection"
            self._events.append(ErrorAnswered(CER, 5012, reason))
            self._out.append(build_cea(self.local, msg, 5012, error_message=reason).encode())
            self._count_answer(msg, 5012)
            return
        app = msg.application_id
        # application 0 (common messages) is supported by every node (RFC 6733 §2.4)
        if app != 0 and app not in self.peer.common_application_ids:
            self._reply_error(msg, 3007, f"application {app} is not supported on this connection")
            return
        if not self.supports(app, code):
            self._reply_error(msg, 3001, f"command {code} of application {app} is not supported")
            return
        if errors:
            # answered at once, and not remembered as a duplicate: its values may not
            # even decode, and a retransmission gets the same answer recomputed
            err = errors[0]
            self._reply_error(msg, err.result_code, err.message, err.failed_avp)
            return
        key = (str(msg.get("Origin-Host", "")), msg.end_to_end)
        cached = self.duplicates.lookup(key, self._now)
        if cached is not None:
            if cached:                    # an answer; IN_FLIGHT (b"") means still working
                self._out.append(cached[:12] + msg.hop_by_hop.to_bytes(4, "big") + cached[16:])
                if self.metrics is not None:
                    self._count_answer(msg, result_code_of(cached) or 0)
            return
        dest_host = msg.get("Destination-Host")
        if dest_host is not None and str(dest_host).lower() != self.local.origin_host.lower():
            self._reply_error(msg, 3002, f"Destination-Host {dest_host} is not this node")
            return
        dest_realm = msg.get("Destination-Realm")
        if dest_realm is not None and not self.local.serves_realm(str(dest_realm)):
            self._reply_error(msg, 3003, f"realm {dest_realm} is not served here")
            return
        ids = (msg.hop_by_hop, msg.end_to_end)
        if ids in self._inbound:
            # the peer reused a Hop-by-Hop id while the first request is unanswered:
            # answering both would confuse it, so the newcomer is refused
            self._reply_error(msg, 5012, "Hop-by-Hop and End-to-End ids already in use")
            return
        self.duplicates.begin(key, self._now)
        self._inbound[ids] = key
        self._events.append(RequestReceived(msg))

    def _answer_base(self, msg: Message, err) -> None:
        if err is None:
            ans = msg.answer(2001).add("Origin-Host", self.local.origin_host)
            ans.add("Origin-Realm", self.local.origin_realm)
            self._out.append(ans.encode())
            self._count_answer(msg, 2001)
        else:
            self._reply_error(msg, err.result_code, err.message, err.failed_avp)

    def _reply_error(self, msg: Message, code: int, reason: str, failed: bytes | None = None) -> None:
        self._events.append(ErrorAnswered(msg.code, code, reason))
        self._out.append(error_answer(self.local, msg, code, reason, failed).encode())
        self._count_answer(msg, code)

    def _count_answer(self, msg: Message, result_code: int) -> None:
        if self.metrics is not None:
            self.metrics.inc("ocs_diameter_answers_total", request_labels(msg) + (str(result_code),))

