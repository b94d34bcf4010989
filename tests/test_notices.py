"""Notices for server-initiated RAR/ASR, on the store side (a real LMDB in a temp dir):
the account_sessions index the ledger keeps, queue_notices, take_notices, the session's
peer and client, and a store of the older schema refused. The node sending them over
loopback is tests/test_reauth.py."""

from __future__ import annotations

import tomllib

import lmdb
import orjson
import pytest

from charging_peer import (DATA_FILE, MSISDN, PGW_A, PGW_B, RATING_GROUP, REALM,
                           SERVER_HOST)
from ocs.charging import provision as prov
from ocs.charging.ledger import Ledger, account_session_key
from ocs.charging.mapping import credit_request
from ocs.charging.notices import queue_notices, take_notices
from ocs.charging.records import decode_notice, decode_session, encode_session
from ocs.charging.requests import CreditRequest, RequestType, ServiceRequest
from ocs.diameter.capabilities import LocalPeer
from ocs.diameter.events import PeerIdentity
from ocs.diameter.message import decode_message, request
from ocs.net.notices import build_request
from ocs.store.base import SCHEMA_KEY, SchemaMismatch
from ocs.store.lmdb import LmdbStore

# a client behind a relay agent (DRA): the node's only connection is the DRA's
DRA = "dra.example.net"
PGW_C, VISITED = "pgw-c.visited.example.org", "visited.example.org"
LOCAL = LocalPeer(SERVER_HOST, REALM)

# ------------------------------------------------------------------ the store side
@pytest.fixture
def store(tmp_path):
    with LmdbStore(str(tmp_path / "s")) as st:
        st.write(lambda t: prov.load_data(t, tomllib.loads(DATA_FILE), 0))
        yield st


def open_session(store, sid, account, peer, now=100, realm=REALM, via=""):
    """A session opened by the client `peer` (Origin-Host, Origin-Realm `realm`),
    whose CCR came on the connection of `via` (default: the client's own)."""
    def render(d):
        return str(int(d.result_code)).encode()
    req = CreditRequest(sid, RequestType.INITIAL, 0, "32251@3gpp.org", [f"e164:{MSISDN[account]}"],
                        services=[ServiceRequest(RATING_GROUP, None, {}, {})], origin_host=peer,
                        origin_realm=realm, peer=via)
    assert store.write(lambda t: Ledger().credit_control(t, req, now, render))[0] == b"2001"


def index(store, account=None):
    with store.read() as t:
        keys = [k for k, _ in t.items("account_sessions")]
    return [k for k in keys if account is None or k.startswith(account.encode() + b"\0")]


def queued(store):
    with store.read() as t:
        return [(int.from_bytes(k, "big"), decode_notice(v)) for k, v in t.items("notices")]


def test_queue_notices_one_per_open_session_of_the_account(store):
    open_session(store, "s1", "alice", PGW_A)
    open_session(store, "s2", "alice", PGW_B)
    open_session(store, "s3", "rita", PGW_A)
    assert index(store) == [account_session_key("alice", "s1"), account_session_key("alice", "s2"),
                            account_session_key("rita", "s3")]
    assert store.write(lambda t: queue_notices(t, "alice", "reauth", 500, "topped up")) == 2
    assert queued(store) == [
        (1, {"v": 1, "session": "s1", "peer": PGW_A, "action": "reauth", "account": "alice",
             "reason": "topped up", "queued": 500, "destination_host": PGW_A,
             "destination_realm": REALM}),
        (2, {"v": 1, "session": "s2", "peer": PGW_B, "action": "reauth", "account": "alice",
             "reason": "topped up", "queued": 500, "destination_host": PGW_B,
             "destination_realm": REALM})]
    # an account id that is a prefix of another's sees only its own sessions
    assert store.write(lambda t: queue_notices(t, "ali", "abort", 501, "closed")) == 0
    assert store.write(lambda t: queue_notices(t, "nobody", "abort", 501, "closed")) == 0
    assert len(queued(store)) == 2
    with pytest.raises(ValueError, match="reauth, abort"):
        store.write(lambda t: queue_notices(t, "alice", "suspend", 501, "x"))


def test_session_keeps_the_connection_peer_and_the_client(store, dictionary):
    """Through a DRA: the notice goes on the DRA's connection (`peer`) and is addressed
    to the client (the CCR's Origin-Host and Origin-Realm). A record of format 1 from
    before (its `peer` was the CCR's Origin-Host) still reads, and addresses it."""
    open_session(store, "s1", "alice", PGW_C, realm=VISITED, via=DRA)
    with store.read() as t:
        record = orjson.loads(t.get("sessions", b"s1"))
    assert (record["v"], record["peer"], record["origin_host"], record["origin_realm"]) == \
        (1, DRA, PGW_C, VISITED)
    assert store.write(lambda t: queue_notices(t, "alice", "reauth", 5, "r")) == 1
    (_, notice), = queued(store)
    assert (notice["peer"], notice["destination_host"], notice["destination_realm"]) == \
        (DRA, PGW_C, VISITED)
    dra = PeerIdentity(DRA, REALM)
    rar = build_request(dictionary, LOCAL, dra, notice)
    assert (rar.get("Destination-Host"), rar.get("Destination-Realm")) == (PGW_C, VISITED)
    # written before origin_host/origin_realm were kept: peer was the CCR's Origin-Host
    del record["origin_host"], record["origin_realm"]
    record["peer"] = PGW_A
    old = decode_session(orjson.dumps(record))
    assert (old.peer, old.origin_host, old.origin_realm) == (PGW_A, PGW_A, "")
    store.write(lambda t: (t.delete("notices", (1).to_bytes(8, "big")),
                           t.put("sessions", b"s1", orjson.dumps(record))))
    assert store.write(lambda t: queue_notices(t, "alice", "abort", 6, "r")) == 1
    (_, notice), = queued(store)
    assert (notice["peer"], notice["destination_host"], notice["destination_realm"]) == \
        (PGW_A, PGW_A, "")
    # no realm known: the peer's from its CER; a notice of before has neither field
    asr = build_request(dictionary, LOCAL, PeerIdentity(PGW_A, "cer.example.net"), notice)
    assert (asr.get("Destination-Host"), asr.get("Destination-Realm")) == (PGW_A, "cer.example.net")
    for key in ("destination_host", "destination_realm"):
        del notice[key]
    asr = build_request(dictionary, LOCAL, PeerIdentity(PGW_A, "cer.example.net"), notice)
    assert (asr.get("Destination-Host"), asr.get("Destination-Realm")) == (PGW_A, "cer.example.net")


def test_closed_account_sessions_are_not_reauthorized(store):
    open_session(store, "s1", "fred", PGW_A)
    store.write(lambda t: prov.set_status(t, "fred", "closed"))
    assert store.write(lambda t: queue_notices(t, "fred", "reauth", 1, "topped up")) == 0
    assert store.write(lambda t: queue_notices(t, "fred", "abort", 1, "closed")) == 1
    assert [n["action"] for _, n in queued(store)] == ["abort"]


def test_stale_index_entry_is_dropped_and_old_records_have_no_peer(store):
    open_session(store, "s1", "alice", PGW_A)
    store.write(lambda t: t.put("account_sessions", account_session_key("alice", "gone"), b""))
    assert store.write(lambda t: queue_notices(t, "alice", "abort", 1, "closed")) == 1
    assert index(store, "alice") == [account_session_key("alice", "s1")]
    # a session record of format 1 written before peers were kept: peer "", not noticed
    with store.read() as t:
        record = orjson.loads(t.get("sessions", b"s1"))
    assert record["peer"] == PGW_A
    del record["peer"]
    old = decode_session(orjson.dumps(record))
    assert old.peer == "" and decode_session(encode_session(old)).peer == ""
    store.write(lambda t: t.put("sessions", b"s1", orjson.dumps(record)))
    assert store.write(lambda t: queue_notices(t, "alice", "abort", 2, "closed")) == 0


def test_take_notices_claims_own_peers_and_drops_unclaimed_after_grace(store):
    for n, (sid, account, peer) in enumerate([("a1", "alice", PGW_A), ("b1", "rita", PGW_B),
                                              ("a2", "fred", PGW_A.upper())]):
        open_session(store, sid, account, peer)
        store.write(lambda t: queue_notices(t, account, "reauth", 1000 + n, "r"))
    store.write(lambda t: t.put("notices", (99).to_bytes(8, "big"), b"not json"))
    hosts = frozenset({PGW_A})
    got = store.write(lambda t: take_notices(t, hosts, 1001, 2, limit=1))
    assert [(n["session"], n["seq"], mine) for n, mine in got] == [("a1", 1, True)]
    got = store.write(lambda t: take_notices(t, hosts, 1001, 2))
    assert [(n.get("session"), mine) for n, mine in got] == [("a2", True), (None, False)]
    assert "not JSON" in got[1][0]["error"]
    assert [n["session"] for _, n in queued(store)] == ["b1"]      # another worker's, still young
    got = store.write(lambda t: take_notices(t, hosts, 1003, 2))
    assert [(n["session"], n["peer"], mine) for n, mine in got] == [("b1", PGW_B, False)]
    assert queued(store) == []


def test_ledger_keeps_the_index_and_the_latest_peer(store):
    ledger = Ledger()

    def run(rtype, number, peer, now):
        req = CreditRequest("s1", rtype, number, "32251@3gpp.org", [f"e164:{MSISDN['alice']}"],
                            services=[ServiceRequest(RATING_GROUP, None, {}, {})], origin_host=peer)
        return store.write(lambda t: ledger.credit_control(t, req, now, lambda d: b""))[1]

    run(RequestType.INITIAL, 0, PGW_A, 100)
    run(RequestType.UPDATE, 1, PGW_B, 110)                  # the session moved (failover)
    with store.read() as t:
        assert decode_session(t.get("sessions", b"s1")).peer == PGW_B
    assert index(store, "alice") == [account_session_key("alice", "s1")]
    run(RequestType.TERMINATION, 2, PGW_B, 120)
    assert index(store) == []
    open_session(store, "s2", "alice", PGW_A, now=200)
    assert store.write(lambda t: ledger.expire(t, 200 + 2 * 60 + 1)) >= 1   # Tcc: 2 x 60 s
    assert index(store) == []
    assert store.write(lambda t: queue_notices(t, "alice", "reauth", 400, "r")) == 0
    assert queued(store) == []


def test_credit_request_reads_origin_host(dictionary):
    msg = request(dictionary, "Credit-Control-Request", [
        ("Session-Id", "pgw;1"), ("Origin-Host", "pgw-a.example.net"), ("Origin-Realm", VISITED),
        ("Destination-Realm", REALM), ("Auth-Application-Id", 4), ("Service-Context-Id", "c"),
        ("CC-Request-Type", 2), ("CC-Request-Number", 1)], hop_by_hop=1, end_to_end=2)
    decoded, errors = decode_message(msg.encode(), dictionary)
    assert errors == [] and credit_request(decoded).origin_host == "pgw-a.example.net"
    req = credit_request(decoded, DRA)
    assert (req.origin_host, req.origin_realm, req.peer) == ("pgw-a.example.net", VISITED, DRA)


def test_store_of_schema_1_is_refused_with_what_to_do(tmp_path):
    path = str(tmp_path / "old")
    LmdbStore(path).close()
    env = lmdb.open(path, max_dbs=16)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(SCHEMA_KEY, b"1")
    env.close()
    with pytest.raises(SchemaMismatch, match="1 found, 2 expected.*reload"):
        LmdbStore(path)
