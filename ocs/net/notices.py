"""Server-initiated requests: RAR and ASR for the notices the EM gateway queued.

RFC 8506 §5.5: the credit-control server re-authorizes a session with a
Re-Auth-Request (Auth-Application-Id 4, Re-Auth-Request-Type AUTHORIZE_ONLY);
the client answers RAA and sends a CCR-U, which the cache (already holding
the new status or balance) answers. RFC 6733 §8.5: an Abort-Session-Request
asks the client to stop the session; it answers ASA and ends it with a CCR-T.
Both are sent on the connection the session's latest CCR came on (the
notice's `peer`, that connection's CER Origin-Host: the client itself, or a
relay agent such as a DRA in between), addressed to the client: Destination-
Host is the CCR's Origin-Host (RFC 6733 §6.1: a server-initiated request that
must reach a specific client, such as an ASR, carries Destination-Host; the
RAR and ASR grammars of §8.3.1 and §8.5.1 require it) and Destination-Realm
its Origin-Realm (§6.6: a server initiating a request uses the Origin-Realm of
a message received from the intended target host). A notice queued before
those were kept falls back to the peer's Origin-Host and Origin-Realm from its
CER.

`NoticeSender` polls every `[charging] notice_interval` seconds. A cheap read
first looks whether any notice is queued; only then one function goes into
the group commit (`AsyncStore`) that takes the notices for the peers connected
to this process and deletes them in the same write transaction, so with
several worker processes each notice is taken once, by the worker holding
that peer's connection. A notice no worker claims within `UNCLAIMED_GRACE`
seconds, or whose peer's connection here is not open with its watchdog OKAY,
is logged and dropped: the session's next CCR gets the new answer anyway.

The requests use the connection's Hop-by-Hop ids and the node's End-to-End id
sequence (`PeerConnection.send_request`, like DWR and DPR). Answers are matched
by Hop-by-Hop id and their Result-Code logged; an answer matching no pending
request is discarded by the peer layer (RFC 6733 §3 and §6.2: an answer with an
unknown Hop-by-Hop Identifier is discarded), and so is one coming after
`answer_timeout`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..charging.notices import ABORT, REAUTH, take_notices
from ..diameter.capabilities import LocalPeer
from ..diameter.dictionary import Dictionary
from ..diameter.events import PeerIdentity
from ..diameter.message import Message, request
from ..diameter.peer import PeerState
from .connection import DiameterConnection, NodeContext
from .periodic import Periodic, cancel

log = logging.getLogger("ocs.charging")
CREDIT_CONTROL_APPLICATION = 4
AUTHORIZE_ONLY = 0                  # Re-Auth-Request-Type (RFC 6733 §8.12)
UNCLAIMED_GRACE = 2                 # seconds (whole: notices carry whole seconds)
_OPEN = (PeerState.R_OPEN, PeerState.I_OPEN)
_NAMES = {REAUTH: ("Re-Auth-Request", "RAR", "RAA"), ABORT: ("Abort-Session-Request", "ASR", "ASA")}


def build_request(dictionary: Dictionary, local: LocalPeer, peer: PeerIdentity,
                  notice: dict) -> Message:
    """RAR (RFC 6733 §8.3.1) or ASR (§8.5.1) for one notice, sent to `peer` and
    addressed to the notice's client (its Destination-Host and -Realm)."""
    name = _NAMES[notice["action"]][0]
    host, realm = destination(notice, peer)
    avps = [("Session-Id", notice["session"]), ("Origin-Host", local.origin_host),
            ("Origin-Realm", local.origin_realm), ("Destination-Realm", realm),
            ("Destination-Host", host),
            ("Auth-Application-Id", CREDIT_CONTROL_APPLICATION)]
    if notice["action"] == REAUTH:
        avps.append(("Re-Auth-Request-Type", AUTHORIZE_ONLY))
    return request(dictionary, name, avps, application_id=CREDIT_CONTROL_APPLICATION)


def destination(notice: dict, peer: PeerIdentity) -> tuple[str, str]:
    """(Destination-Host, Destination-Realm): the client's, else the peer's from its CER."""
    return (str(notice.get("destination_host") or peer.origin_host),
            str(notice.get("destination_realm") or peer.origin_realm))


class NoticeSender(Periodic):
    name = "notice poller"

    def __init__(self, store, node: NodeContext, interval: float, clock=time.time,
                 grace: int = UNCLAIMED_GRACE, batch: int = 256, answer_timeout: float = 10.0):
        super().__init__(interval)
        self.store, self.node, self.clock = store, node, clock
        self.grace, self.batch, self.answer_timeout = grace, batch, answer_timeout
        self._exchanges: set[asyncio.Task] = set()

    def _queued(self) -> bool:
        """Whether any notice is queued: a read snapshot, no write transaction."""
        read = getattr(self.store.store, "read", None)
        if read is None:
            return True
        with read() as txn:
            return any(True for _ in txn.items("notices", limit=1))

    async def poll_once(self) -> int:
        """Take this process's notices and send them; returns how many were handled
        (sent or dropped)."""
        total = 0
        while self._queued():
            hosts, now = self.node.peers.hosts(), int(self.clock())
            found = await self.store.run(
                lambda txn: take_notices(txn, hosts, now, self.grace, self.batch, 4 * self.batch))
            for notice, mine in found:
                if mine:
                    self.deliver(notice)
                else:
                    self._dropped(notice, "no connection to the peer in this node"
                                  if "error" not in notice else f"unreadable: {notice['error']}")
            total += len(found)
            if sum(1 for _, mine in found if mine) < self.batch:
                break
        return total

    def deliver(self, notice: dict) -> bool:
        """Send the notice's RAR/ASR if its peer's connection is open; False if dropped."""
        if notice.get("action") not in _NAMES:
            self._dropped(notice, f"unknown action {notice.get('action')!r}")
            return False
        conn = self.node.peers.get(str(notice["peer"]))
        core = conn.peer if conn is not None else None
        if core is None or core.peer is None or core.state not in _OPEN:
            self._dropped(notice, "the peer is not connected")
            return False
        if core.watchdog_state != "OKAY":
            self._dropped(notice, f"the peer's watchdog is {core.watchdog_state}")
            return False
        msg = build_request(self.node.dictionary, self.node.local, core.peer, notice)
        self._count("ocs_notices_sent_total", (_NAMES[notice["action"]][1],))
        task = asyncio.get_running_loop().create_task(self._exchange(conn, msg, notice))
        self._exchanges.add(task)
        task.add_done_callback(self._exchanges.discard)
        return True

    def _count(self, name: str, labels: tuple) -> None:
        if self.node.metrics is not None:
            self.node.metrics.inc(name, labels)

    def _dropped(self, notice: dict, why: str) -> None:
        self._count("ocs_notices_dropped_total", ())
        log.info("notice %s (%s, %s) for session %s dropped: %s; its next CCR applies the change",
                 notice.get("seq"), notice.get("action"), notice.get("reason"), notice.get("session"),
                 why, extra={"session_id": notice.get("session"), "peer": notice.get("peer")})

    async def _exchange(self, conn: DiameterConnection, msg: Message, notice: dict) -> None:
        _, req_name, ans_name = _NAMES[notice["action"]]
        extra = {"session_id": notice["session"], "peer": notice["peer"], "connection": conn.id}
        client = str(notice.get("destination_host") or notice["peer"])
        via = "" if client.lower() == str(notice["peer"]).lower() else f" via {notice['peer']}"
        try:
            answer = await conn.request(msg, self.answer_timeout)
        except asyncio.TimeoutError:
            log.warning("%s for session %s: no %s within %.0f s", req_name, notice["session"],
                        ans_name, self.answer_timeout, extra=extra)
            self._count("ocs_notice_answers_total", (req_name, "timeout"))
            return
        except (ConnectionError, RuntimeError) as e:   # closed, or no longer open, meanwhile
            log.warning("%s for session %s not answered: %s", req_name, notice["session"], e,
                        extra=extra)
            self._count("ocs_notice_answers_total", (req_name, "closed"))
            return
        try:
            code = answer.get("Result-Code")
        except Exception as e:          # a value that does not decode: still only a log line
            code = f"unreadable ({e!r})"
        self._count("ocs_notice_answers_total", (req_name, str(code) if isinstance(code, int)
                                                 else "unreadable"))
        if answer.code != msg.code:
            log.warning("%s for session %s answered by command %d (Result-Code %s)", req_name,
                        notice["session"], answer.code, code, extra=extra)
            return
        level = logging.INFO if isinstance(code, int) and 2000 <= code < 3000 else logging.WARNING
        log.log(level, "%s %s from %s%s for session %s (%s: %s)", ans_name, code, client, via,
                notice["session"], notice["action"], notice.get("reason"), extra=extra)

    async def tick(self) -> None:
        await self.poll_once()

    async def stop(self) -> None:
        """Stop polling, and drop the RAR/ASR exchanges still waiting for answers."""
        await cancel(list(self._exchanges) + ([self.task] if self.task is not None else []))
