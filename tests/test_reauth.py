"""Server-initiated RAR and ASR (RFC 8506 §5.5, RFC 6733 §8.3 and §8.5) to the
peer that holds a session, from the notices the EM gateway queues.

The node in process (its own event-loop thread, real TCP on 127.0.0.1 port 0, an
LMDB in a temp dir; the store side is tests/test_notices.py) with
python-diameter message classes over a plain socket as the P-GW, and the test
writing to the store the way the EM gateway does: the account change and
queue_notices in one write transaction.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import tomllib

import pytest
from diameter.message import Message as PdMessage
from diameter.message.commands import (AbortSessionRequest, CreditControlAnswer, ReAuthRequest)

from charging_peer import (DATA_FILE, INITIAL, MSISDN, PGW_A, PGW_B, RATING_GROUP, REALM,
                           SERVER_HOST, TERMINATION, TIMEOUT, UPDATE, RawPeer, ccr, rsu_octets,
                           usu_octets)
from ocs.charging import provision as prov
from ocs.charging.ledger import account_session_key
from ocs.charging.notices import queue_notices
from ocs.charging.records import decode_balance
from ocs.config import ChargingConfig, Config, ListenConfig, MetricsConfig, NodeConfig, StoreConfig
from ocs.diameter.capabilities import LocalPeer
from ocs.service import open_store, serve
from test_notices import index, queued

# a client behind a relay agent (DRA): the node's only connection is the DRA's
DRA = "dra.example.net"
PGW_C, VISITED = "pgw-c.visited.example.org", "visited.example.org"
LOCAL = LocalPeer(SERVER_HOST, REALM)

# ------------------------------------------------------------------ the node, in process
class Clock:
    """Wall clock the test can move forward (Tcc expiry)."""

    def __init__(self):
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


class NodeThread:
    """`serve()` in its own thread and event loop on 127.0.0.1:0, store in tmp_path."""

    def __init__(self, tmp_path, load: bool = True, **charging):
        self.clock = Clock()
        self.config = Config(node=NodeConfig(origin_host=SERVER_HOST, origin_realm=REALM),
                             listen=ListenConfig("127.0.0.1", 0),
                             store=StoreConfig(path=str(tmp_path / "store")),
                             charging=ChargingConfig(sweep_interval=0.05, notice_interval=0.05,
                                                      **charging),
                             metrics=MetricsConfig("127.0.0.1:0", 0.05))
        self.store = open_store(self.config)
        if load:
            self.store.write(lambda t: prov.load_data(t, tomllib.loads(DATA_FILE), int(self.clock())))
        self.port = 0
        self._listening = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._listening.wait(10), "the node did not start listening"

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def started(server) -> None:
            self.port = server.port
            self.metrics_port = server.metrics_port
            self._listening.set()
        await serve(self.config, None, self._stop, self.store, self.clock, started)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        self.store.close()

    def gateway(self, fn):
        """One write transaction as the EM gateway makes it: fn(txn, now)."""
        now = int(self.clock())
        return self.store.write(lambda t: fn(t, now))

    def main_bucket(self, account: str) -> tuple[int, int]:
        with self.store.read() as t:
            b = decode_balance(t.get("balances", account.encode())).bucket("main")
        return b.amount, b.reserved


@pytest.fixture
def node(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ocs")
    n = NodeThread(tmp_path)
    try:
        yield n
    finally:
        n.close()


class Gateway(RawPeer):
    """A P-GW on one connection that also answers the node's RAR and ASR."""

    def expect(self, kind, within: float = 1.0):
        self.sock.settimeout(within)
        try:
            frame = self.recv_frame()
        finally:
            self.sock.settimeout(TIMEOUT)
        msg = PdMessage.from_bytes(frame)
        assert isinstance(msg, kind), msg
        return msg

    def answer(self, req, result_code: int) -> None:
        ans = req.to_answer()
        ans.session_id = req.session_id
        ans.result_code = result_code
        ans.origin_host = self.origin_host.encode()
        ans.origin_realm = REALM.encode()
        self.send(ans)

    def open(self, sid: str, account: str):
        _, cca = self.exchange(ccr(sid, INITIAL, 0, self.origin_host, msisdn=MSISDN[account],
                                   mscc=[(RATING_GROUP, rsu_octets(), None)]))
        assert isinstance(cca, CreditControlAnswer) and cca.result_code == 2001, cca
        return cca


def check_request(msg, sid: str, peer: str = PGW_A) -> None:
    h = msg.header
    assert h.is_request and h.is_proxyable and not h.is_error and h.application_id == 4
    assert msg.session_id == sid
    assert (msg.origin_host, msg.origin_realm) == (SERVER_HOST.encode(), REALM.encode())
    assert (msg.destination_host, msg.destination_realm) == (peer.encode(), REALM.encode())
    assert msg.auth_application_id == 4


def wait_for(predicate, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def logged(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


def test_suspended_account_rar_then_ccr_u_4010(node, caplog):
    """(a) carol (1000) opens a session (10 reserved). The gateway suspends her and
    queues a reauth: RAR within 1 s; RAA 2001; CCR-U with USU 2000 -> 4010, the
    2 cents still debited, the reservation released, the session and its index gone."""
    sid = f"{PGW_A};carol;rar"
    with Gateway(node.port, PGW_A) as pgw:
        pgw.open(sid, "carol")
        n = node.gateway(lambda t, now: (prov.set_status(t, "carol", "suspended"),
                                         queue_notices(t, "carol", "reauth", now, "suspended"))[1])
        assert n == 1
        rar = pgw.expect(ReAuthRequest, within=1.0)
        check_request(rar, sid)
        assert rar.re_auth_request_type == 0                     # AUTHORIZE_ONLY
        pgw.answer(rar, 2001)
        _, cca = pgw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(2000))]))
        assert cca.result_code == 4010
        wait_for(lambda: logged(caplog, f"RAA 2001 from {PGW_A} for session {sid}"))
    assert node.main_bucket("carol") == (998, 0)
    assert queued(node.store) == [] and index(node.store, "carol") == []
    from test_metrics import scrape, value
    wait_for(lambda: value(scrape(node.metrics_port), "ocs_notice_answers_total",
                           command="RAR", result_code="2001") == 1)
    s = scrape(node.metrics_port)
    assert value(s, "ocs_notices_sent_total", command="RAR") == 1
    assert value(s, "ocs_diameter_answers_total", command="CCR", request_type="update",
                 result_code="4010") == 1


def test_top_up_rar_then_ccr_u_is_granted(node, caplog):
    """(b) bob (15) opens a session (10 reserved); a CCR-U of 10000 octets leaves 5:
    a partial grant of 5000 with Final-Unit-Indication. A top-up of 500 with a
    reauth: RAR, RAA 2002 (RFC 8506 §5.5), and the CCR-U is granted in full."""
    sid = f"{PGW_A};bob;topup"
    with Gateway(node.port, PGW_A) as pgw:
        pgw.open(sid, "bob")
        _, cca = pgw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(10000))]))
        m = cca.multiple_services_credit_control[0]
        assert m.granted_service_unit.cc_total_octets == 5000 and m.final_unit_indication is not None
        node.gateway(lambda t, now: (prov.top_up(t, "bob", 500, now),
                                     queue_notices(t, "bob", "reauth", now, "topped up")))
        rar = pgw.expect(ReAuthRequest)
        check_request(rar, sid)
        pgw.answer(rar, 2002)
        _, cca = pgw.exchange(ccr(sid, UPDATE, 2, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(5000))]))
        assert cca.result_code == 2001
        m = cca.multiple_services_credit_control[0]
        assert m.granted_service_unit.cc_total_octets == 10000 and m.final_unit_indication is None
        wait_for(lambda: logged(caplog, f"RAA 2002 from {PGW_A} for session {sid}"))
    assert node.main_bucket("bob") == (500, 10)


def test_closed_account_asr_then_asa(node, caplog):
    """(c) fred's account is closed with an abort: ASR, ASA 2001, then the client
    ends the session with a CCR-T (its usage debited); nothing stays reserved."""
    sid = f"{PGW_A};fred;asr"
    with Gateway(node.port, PGW_A) as pgw:
        pgw.open(sid, "fred")
        node.gateway(lambda t, now: (prov.set_status(t, "fred", "closed"),
                                     queue_notices(t, "fred", "abort", now, "closed")))
        asr = pgw.expect(AbortSessionRequest)
        check_request(asr, sid)
        assert asr.header.command_code == 274
        pgw.answer(asr, 2001)
        wait_for(lambda: logged(caplog, f"ASA 2001 from {PGW_A} for session {sid}"))
        _, cca = pgw.exchange(ccr(sid, TERMINATION, 1, mscc=[(RATING_GROUP, None, usu_octets(1000))]))
        assert cca.result_code == 2001
    assert node.main_bucket("fred") == (999, 0)
    assert index(node.store, "fred") == []


def test_index_follows_termination_expiry_and_the_latest_peer(node):
    """(d) two sessions of alice; one moves to PGW_B (failover) and its RAR goes
    there; CCR-T removes one index entry, Tcc expiry the other; then a reauth
    for alice notices nobody."""
    s1, s2 = f"{PGW_A};alice;1", f"{PGW_A};alice;2"
    with Gateway(node.port, PGW_A) as a, Gateway(node.port, PGW_B) as b:
        a.open(s1, "alice")
        a.open(s2, "alice")
        assert len(index(node.store, "alice")) == 2
        _, cca = b.exchange(ccr(s2, UPDATE, 1, PGW_B, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(0))]))
        assert cca.result_code == 2001
        assert node.gateway(lambda t, now: queue_notices(t, "alice", "reauth", now, "plan change")) == 2
        check_request(a.expect(ReAuthRequest), s1)
        check_request(b.expect(ReAuthRequest), s2, PGW_B)
        _, cca = a.exchange(ccr(s1, TERMINATION, 1, mscc=[(RATING_GROUP, None, usu_octets(0))]))
        assert cca.result_code == 2001
        assert index(node.store, "alice") == [account_session_key("alice", s2)]
        node.clock.ahead = 3600.0                                # past s2's Tcc (2 x 60 s)
        wait_for(lambda: index(node.store, "alice") == [])
    assert node.gateway(lambda t, now: queue_notices(t, "alice", "reauth", now, "r")) == 0
    assert queued(node.store) == []
    assert node.main_bucket("alice") == (1000, 0)


def test_rar_through_a_relay_goes_on_its_connection_to_the_client(node, caplog):
    """The P-GW reaches the node only through a DRA (its own CER Origin-Host): the
    RAR for the P-GW's session goes on the DRA's connection, with Destination-Host
    the P-GW's Origin-Host and Destination-Realm its Origin-Realm (RFC 6733 §6.1,
    §6.6); the DRA relays the RAA and the CCR-U back."""
    sid = f"{PGW_C};carol;relayed"

    def relayed(number, rtype, used=None, **kw):
        m = ccr(sid, rtype, number, PGW_C, mscc=[(RATING_GROUP, rsu_octets(), used)], **kw)
        m.origin_realm = VISITED.encode()
        m.route_record = [DRA.encode()]
        return m
    with Gateway(node.port, DRA) as dra:
        _, cca = dra.exchange(relayed(0, INITIAL, msisdn=MSISDN["carol"]))
        assert cca.result_code == 2001
        node.gateway(lambda t, now: (prov.set_status(t, "carol", "suspended"),
                                     queue_notices(t, "carol", "reauth", now, "suspended")))
        rar = dra.expect(ReAuthRequest, within=2.0)
        assert rar.session_id == sid and rar.header.is_proxyable
        assert (rar.destination_host, rar.destination_realm) == (PGW_C.encode(), VISITED.encode())
        assert (rar.origin_host, rar.origin_realm) == (SERVER_HOST.encode(), REALM.encode())
        raa = rar.to_answer()
        raa.session_id, raa.result_code = sid, 2001
        raa.origin_host, raa.origin_realm = PGW_C.encode(), VISITED.encode()
        dra.send(raa)
        wait_for(lambda: logged(caplog, f"RAA 2001 from {PGW_C} via {DRA} for session {sid}"))
        _, cca = dra.exchange(relayed(1, UPDATE, usu_octets(1000)))
        assert cca.result_code == 4010
    assert not logged(caplog, "dropped")


def test_notice_for_a_peer_not_connected_is_dropped(node, caplog):
    """(e) rita's session was opened by PGW_A, which then disconnected (DPR): the
    notice is logged and dropped, and the node goes on serving."""
    sid = f"{PGW_A};rita;gone"
    with Gateway(node.port, PGW_A) as pgw:
        pgw.open(sid, "rita")
    assert node.gateway(lambda t, now: queue_notices(t, "rita", "reauth", now, "suspended")) == 1
    wait_for(lambda: queued(node.store) == [], timeout=6.0)     # unclaimed: 1-2 s
    assert logged(caplog, f"for session {sid} dropped")
    with Gateway(node.port, PGW_A) as pgw:
        _, cca = pgw.exchange(ccr(sid, TERMINATION, 1, mscc=[(RATING_GROUP, None, usu_octets(0))]))
        assert cca.result_code == 2001


def test_error_and_unmatched_answers_are_logged_or_discarded(node, caplog):
    """A RAA with the E bit (3001: the client has no handler) is logged; an answer
    whose Hop-by-Hop id matches no request is discarded (RFC 6733 §6.2); the
    connection stays up."""
    sid = f"{PGW_A};sam;odd"
    with Gateway(node.port, PGW_A) as pgw:
        pgw.open(sid, "sam")
        node.gateway(lambda t, now: queue_notices(t, "sam", "reauth", now, "r"))
        rar = pgw.expect(ReAuthRequest)
        stray = rar.to_answer()
        stray.header.hop_by_hop_identifier ^= 0x5A5A5A5A
        stray.session_id, stray.result_code = sid, 2001
        stray.origin_host, stray.origin_realm = PGW_A.encode(), REALM.encode()
        pgw.send(stray)
        pgw.answer(rar, 3001)
        wait_for(lambda: logged(caplog, f"RAA 3001 from {PGW_A} for session {sid}"))
        _, cca = pgw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(0))]))
        assert cca.result_code == 2001


def test_operator_suspend_from_the_command_line_notifies_the_session(node):
    """`ocs accounts suspend` (another process on the same cache) queues the notice too."""
    import subprocess
    import sys
    from test_serve import REPO
    sid = f"{PGW_A};carol;cli"
    with Gateway(node.port, PGW_A) as pgw:
        pgw.open(sid, "carol")
        r = subprocess.run([sys.executable, "-m", "ocs", "accounts", "--store", node.config.store.path,
                            "suspend", "carol"], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "carol: suspended (1 session(s) notified)", r
        check_request(pgw.expect(ReAuthRequest, within=5.0), sid)
