"""End to end credit control: `ocs serve` as a subprocess on 127.0.0.1 with a
real LMDB store in tmp_path (provisioned by `ocs accounts load` from the data
file in tests/charging_peer.py), driven by the independent python-diameter
stack (its Node, or its message classes over a plain socket).

Expected numbers are worked out by hand from the data file: data costs 1 cent
per 1000 octets (each report rounded up to a whole cent), an SMS 7 cents, the
default data grant is 10000 octets (10 cents) with Validity-Time 60 s (1 s on
the "quick" plan). Every outcome is checked both in the CCA and in the store:
with `ocs accounts show/events` while the node runs, and by opening the LMDB
store read-only once the node has stopped.

Rules (RFC 8506 / TS 32.299, /work/shared/reference/diameter.md B.11-B.12):
debit Used-Service-Unit, release the old reservation, grant what the balance
affords; a partial grant carries Final-Unit-Indication; nothing affordable is
MSCC 4012; (Session-Id, CC-Request-Number) duplicates are answered again
without a second debit; Tcc = tcc_factor x Validity-Time releases abandoned
reservations.
"""

from __future__ import annotations

import time

import pytest
from diameter.message.avp.grouped import RequestedServiceUnit
from diameter.message import Message as PdMessage
from diameter.message.commands import AbortSessionRequest, CreditControlAnswer, ReAuthRequest

from charging_peer import (CHECK_BALANCE, DIRECT_DEBITING, EVENT, FAILED_AVP, INITIAL, MSISDN,
                           PGW_A, PGW_B, PRICE_ENQUIRY, RATING_GROUP, REALM, REFUND_ACCOUNT,
                           RESULT_CODE, SERVER_HOST, SERVICE_CONTEXT_ID, SMS, SUBSCRIPTION_ID,
                           TERMINATION, UNKNOWN_MSISDN, UPDATE, NodePeer, OcsProcess, RawPeer, avps,
                           ccr, main_bucket, next_id, rsu_octets, shown_main, stop_all, usu_octets,
                           with_t_flag, without_ids)

REDIRECT = 1                       # Final-Unit-Action
URL = 2                            # Redirect-Address-Type
TOPUP = "http://topup.example.net/"
EUR = 978


@pytest.fixture
def ocs(tmp_path):
    node = OcsProcess(tmp_path).start()
    try:
        yield node
    finally:
        node.stop()


def stop(ocs: OcsProcess) -> dict:
    """Stop the node (SIGTERM: clean exit) and read its store."""
    assert ocs.stop() == 0, ocs.log()
    return ocs.snapshot()


def session_events(snapshot_or_list, session: str) -> list:
    events = snapshot_or_list["events"] if isinstance(snapshot_or_list, dict) else snapshot_or_list
    return [e for e in events if e.get("session") == session]


def charged_events(snapshot: dict, account: str) -> list:
    """The account's events written by charging (provisioning events have no session)."""
    return [e for e in snapshot["events"] if e["account"] == account and e["session"] is not None]


def check_cca(cca, session: str, rtype: int, number: int, result: int) -> None:
    assert isinstance(cca, CreditControlAnswer), cca
    assert not cca.header.is_request
    assert not cca.header.is_error, "a CCA with a 2xxx/4xxx/5xxx Result-Code has the E bit clear"
    assert cca.header.application_id == 4 and cca.header.command_code == 272
    assert cca.session_id == session
    assert cca.result_code == result, f"Result-Code {cca.result_code}, expected {result}"
    assert cca.origin_host == SERVER_HOST.encode() and cca.origin_realm == REALM.encode()
    assert cca.auth_application_id == 4
    assert cca.cc_request_type == rtype and cca.cc_request_number == number


def only_mscc(cca):
    assert len(cca.multiple_services_credit_control) == 1, cca.multiple_services_credit_control
    return cca.multiple_services_credit_control[0]


def check_grant(m, octets: int, validity: int = 60) -> None:
    assert m.rating_group == RATING_GROUP
    assert m.result_code == 2001
    assert m.granted_service_unit is not None and m.granted_service_unit.cc_total_octets == octets
    assert m.validity_time == validity


def failed_avp_children(frame: bytes) -> list:
    """The AVPs inside the (single) Failed-AVP of an answer, decoded by hand."""
    failed = [data for code, _, _, data in avps(frame) if code == FAILED_AVP]
    assert len(failed) == 1, f"expected one Failed-AVP, got {len(failed)}"
    return avps(b"\0" * 20 + failed[0])


def result_code_of(frame: bytes) -> int:
    (rc,) = [int.from_bytes(d, "big") for code, _, _, d in avps(frame) if code == RESULT_CODE]
    return rc


# ------------------------------------------------------------------ 1. data session
def test_data_session_initial_updates_termination(ocs):
    """CCR-I / CCR-U / CCR-U / CCR-T for alice (1000 cents), python-diameter Node.

    I: empty RSU -> default grant 10000 octets, 10 cents reserved.
    U1: USU 4000 (4 cents), RSU 20000 -> grant 20000 (20 reserved).   996
    U2: USU 12500 (13 cents: rounded up), empty RSU -> grant 10000.   983
    T: USU 7000 (7 cents), nothing reserved afterwards.               976
    """
    pd = NodePeer(ocs.port, PGW_A)
    try:
        pd.open()
        sid = pd.session_id()
        msisdn = MSISDN["alice"]

        cca = pd.request(ccr(sid, INITIAL, 0, msisdn=msisdn, ids=False,
                             mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, INITIAL, 0, 2001)
        assert cca.cc_session_failover == 1
        m = only_mscc(cca)
        check_grant(m, 10000)
        assert m.volume_quota_threshold == 1000 and m.quota_holding_time == 30
        assert m.final_unit_indication is None
        shown = ocs.show("alice")
        assert shown_main(shown)["amount"] == 1000 and shown_main(shown)["reserved"] == 10
        assert shown["available_money"] == 990 and shown["sessions"] == [sid]

        cca = pd.request(ccr(sid, UPDATE, 1, ids=False,
                             mscc=[(RATING_GROUP, rsu_octets(20000), usu_octets(4000))]))
        check_cca(cca, sid, UPDATE, 1, 2001)
        assert cca.cc_session_failover == 1
        check_grant(only_mscc(cca), 20000)
        shown = ocs.show("alice")
        assert shown_main(shown)["amount"] == 996 and shown_main(shown)["reserved"] == 20

        cca = pd.request(ccr(sid, UPDATE, 2, ids=False,
                             mscc=[(RATING_GROUP, rsu_octets(), usu_octets(12500))]))
        check_cca(cca, sid, UPDATE, 2, 2001)
        check_grant(only_mscc(cca), 10000)
        shown = ocs.show("alice")
        assert shown_main(shown)["amount"] == 983 and shown_main(shown)["reserved"] == 10

        cca = pd.request(ccr(sid, TERMINATION, 3, ids=False,
                             mscc=[(RATING_GROUP, None, usu_octets(7000))]))
        check_cca(cca, sid, TERMINATION, 3, 2001)
        m = only_mscc(cca)
        assert m.rating_group == RATING_GROUP and m.result_code == 2001
        assert m.granted_service_unit is None and m.validity_time is None
        pd.disconnect()
    finally:
        pd.close()

    snap = stop(ocs)
    main = main_bucket(snap, "alice")
    assert (main.amount, main.reserved) == (976, 0)
    assert sid not in snap["sessions"]
    events = session_events(snap, sid)
    assert [e["type"] for e in events] == ["usage"] * 3
    assert [e["request_number"] for e in events] == [1, 2, 3]
    assert [e["request_type"] for e in events] == [UPDATE, UPDATE, TERMINATION]
    assert [e["units"] for e in events] == [{"total_octets": 4000}, {"total_octets": 12500},
                                            {"total_octets": 7000}]
    assert [e["amount"] for e in events] == [4, 13, 7]
    assert [e["impacts"] for e in events] == [[["main", -4]], [["main", -13]], [["main", -7]]]
    assert [e["balance_after"] for e in events] == [{"money": 996}, {"money": 983}, {"money": 976}]
    assert all(e["account"] == "alice" and e["rating_group"] == RATING_GROUP and e["unpaid"] == 0
               and e["currency"] == "EUR" for e in events)
    assert sum(e["amount"] for e in events) == 1000 - 976
    assert len({e["event_id"] for e in events}) == 3
    assert charged_events(snap, "alice") == events


# ------------------------------------------------------------------ 2. SMS direct debit
def test_sms_event_direct_debiting(ocs):
    """CCR-EVENT DIRECT_DEBITING for sam (100 cents): GSU = the units debited, 7 cents each."""
    with RawPeer(ocs.port, PGW_A) as raw:
        s1, s2, s3 = (f"{PGW_A};sms;{n}" for n in (1, 2, 3))
        sms1 = ccr(s1, EVENT, 0, context=SMS, msisdn=MSISDN["sam"], requested_action=DIRECT_DEBITING,
                   rsu=RequestedServiceUnit(cc_service_specific_units=1))
        request = sms1.as_bytes()
        first, cca = raw.exchange(request)
        check_cca(cca, s1, EVENT, 0, 2001)
        assert cca.granted_service_unit.cc_service_specific_units == 1
        assert cca.multiple_services_credit_control == []
        assert cca.cc_session_failover is None

        _, cca = raw.exchange(ccr(s2, EVENT, 0, context=SMS, msisdn=MSISDN["sam"],
                                  requested_action=DIRECT_DEBITING,
                                  rsu=RequestedServiceUnit(cc_service_specific_units=3)))
        check_cca(cca, s2, EVENT, 0, 2001)
        assert cca.granted_service_unit.cc_service_specific_units == 3

        # the same with MSCC: the grant is inside the MSCC
        _, cca = raw.exchange(ccr(s3, EVENT, 0, context=SMS, msisdn=MSISDN["sam"],
                                  requested_action=DIRECT_DEBITING,
                                  mscc=[(20, RequestedServiceUnit(cc_service_specific_units=2), None)]))
        check_cca(cca, s3, EVENT, 0, 2001)
        m = only_mscc(cca)
        assert m.rating_group == 20 and m.result_code == 2001
        assert m.granted_service_unit.cc_service_specific_units == 2
        assert ocs.show("sam")["available_money"] == 100 - 7 - 21 - 14

    # the SMSC lost the first answer and retransmits (T flag) on a new connection:
    # with the same End-to-End id, and once more with a new one; no second debit
    with RawPeer(ocs.port, PGW_A) as again:
        hbh = next_id()
        again.send(with_t_flag(request, hbh))
        same = again.recv_frame()
        assert same[12:16] == hbh.to_bytes(4, "big")
        assert same[:12] == first[:12] and same[16:] == first[16:]
        hbh, e2e = next_id(), next_id()
        again.send(with_t_flag(request[:12] + hbh.to_bytes(4, "big") + e2e.to_bytes(4, "big")
                               + request[20:], hbh))
        other = again.recv_frame()
        assert other[16:20] == e2e.to_bytes(4, "big")
        assert without_ids(other) == without_ids(first)

    snap = stop(ocs)
    main = main_bucket(snap, "sam")
    assert (main.amount, main.reserved) == (58, 0)
    assert not snap["sessions"], "events keep no session"
    events = charged_events(snap, "sam")
    assert [(e["session"], e["type"], e["request_type"], e["units"], e["amount"], e["impacts"])
            for e in events] == [
        (s1, "direct_debit", EVENT, {"service_specific_units": 1}, 7, [["main", -7]]),
        (s2, "direct_debit", EVENT, {"service_specific_units": 3}, 21, [["main", -21]]),
        (s3, "direct_debit", EVENT, {"service_specific_units": 2}, 14, [["main", -14]]),
    ]
    assert [e["balance_after"] for e in events] == [{"money": 93}, {"money": 72}, {"money": 58}]
    assert sum(e["amount"] for e in events) == 100 - 58


# ------------------------------------------------------------------ 3. unknown subscriber
def test_unknown_subscriber_5030(ocs):
    with RawPeer(ocs.port, PGW_A) as raw:
        sid = f"{PGW_A};unknown;1"
        _, cca = raw.exchange(ccr(sid, INITIAL, 0, msisdn=UNKNOWN_MSISDN,
                                  mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, INITIAL, 0, 5030)
        assert cca.multiple_services_credit_control == [] and cca.granted_service_unit is None
        assert cca.cc_session_failover is None

        sid2 = f"{PGW_A};unknown;2"
        _, cca = raw.exchange(ccr(sid2, EVENT, 0, context=SMS, msisdn=UNKNOWN_MSISDN,
                                  requested_action=DIRECT_DEBITING,
                                  rsu=RequestedServiceUnit(cc_service_specific_units=1)))
        check_cca(cca, sid2, EVENT, 0, 5030)
        assert cca.granted_service_unit is None

    snap = stop(ocs)
    assert not snap["sessions"]
    assert [e for e in snap["events"] if e["session"] is not None] == []


# ------------------------------------------------------------------ 4. running out of money
def test_exhausted_balance_final_units_then_4012(ocs):
    """bob has 15 cents.

    I: grant 10000 (10 reserved, 5 free: a further unit is affordable, no FUI).
    U1: USU 10000 -> 5 left; only 5000 octets affordable: partial grant + FUI REDIRECT.
    U2: USU 5000, no RSU (final units used) -> 0 left; no GSU, Validity-Time 300.
    U3: RSU, nothing affordable: MSCC 4012 with FUI REDIRECT, no GSU.
    T: USU 0.
    """
    with RawPeer(ocs.port, PGW_A) as raw:
        sid = f"{PGW_A};bob;1"
        _, cca = raw.exchange(ccr(sid, INITIAL, 0, msisdn=MSISDN["bob"],
                                  mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, INITIAL, 0, 2001)
        m = only_mscc(cca)
        check_grant(m, 10000)
        assert m.final_unit_indication is None

        _, cca = raw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(10000))]))
        check_cca(cca, sid, UPDATE, 1, 2001)
        m = only_mscc(cca)
        check_grant(m, 5000)
        fui = m.final_unit_indication
        assert fui is not None and fui.final_unit_action == REDIRECT
        assert fui.redirect_server.redirect_address_type == URL
        assert fui.redirect_server.redirect_server_address == TOPUP

        # RFC 8506 5.6.2: the final units used, the client reports them without asking
        # for more; the server debits, reserves nothing, and says (Validity-Time) how
        # long the redirection lasts: the tariff's restricted_validity_time, 300 s
        _, cca = raw.exchange(ccr(sid, UPDATE, 2, mscc=[(RATING_GROUP, None, usu_octets(5000))]))
        check_cca(cca, sid, UPDATE, 2, 2001)
        m = only_mscc(cca)
        assert (m.rating_group, m.result_code) == (RATING_GROUP, 2001)
        assert m.granted_service_unit is None
        assert m.validity_time == 300
        shown = ocs.show("bob")
        assert (shown_main(shown)["amount"], shown_main(shown)["reserved"]) == (0, 0)

        # after the Validity-Time the client asks again: nothing is affordable
        _, cca = raw.exchange(ccr(sid, UPDATE, 3, mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, UPDATE, 3, 2001)
        m = only_mscc(cca)
        assert m.rating_group == RATING_GROUP
        assert m.result_code == 4012
        assert m.granted_service_unit is None
        fui = m.final_unit_indication
        assert fui is not None and fui.final_unit_action == REDIRECT
        assert fui.redirect_server.redirect_server_address == TOPUP
        # RFC 8506 5.6.3: FUI REDIRECT without a grant carries Validity-Time (how long
        # to redirect before asking again)
        assert m.validity_time == 300

        _, cca = raw.exchange(ccr(sid, TERMINATION, 4, mscc=[(RATING_GROUP, None, usu_octets(0))]))
        check_cca(cca, sid, TERMINATION, 4, 2001)

    snap = stop(ocs)
    main = main_bucket(snap, "bob")
    assert (main.amount, main.reserved) == (0, 0)
    assert sid not in snap["sessions"]
    events = session_events(snap, sid)
    assert [(e["type"], e["units"], e["amount"], e["unpaid"]) for e in events] == [
        ("usage", {"total_octets": 10000}, 10, 0), ("usage", {"total_octets": 5000}, 5, 0)]
    assert sum(e["amount"] for e in events) == 15


# ------------------------------------------------------------------ 5. retransmissions
def test_retransmitted_ccr_update_answered_identically_without_second_debit(ocs):
    """rita (1000): I, then U1 with USU 3000 (3 cents). The U1 is then sent again
    (a) byte for byte with the T flag (same Origin-Host and End-to-End id), and
    (b) from another peer (pgw-b, another connection) with a new End-to-End id but
    the same Session-Id and CC-Request-Number. Both get the original answer.
    (c) U2 and a duplicate sent at once on both connections: one debit (4 cents)."""
    sid = f"{PGW_A};rita;1"
    with RawPeer(ocs.port, PGW_A) as a:
        _, cca = a.exchange(ccr(sid, INITIAL, 0, msisdn=MSISDN["rita"],
                                mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, INITIAL, 0, 2001)
        update = ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(3000))])
        request = update.as_bytes()
        first, cca = a.exchange(request)
        check_cca(cca, sid, UPDATE, 1, 2001)
        check_grant(only_mscc(cca), 10000)

        # (a) T flag, same End-to-End id, same connection
        hbh = next_id()
        a.send(with_t_flag(request, hbh))
        again = a.recv_frame()
        assert again[12:16] == hbh.to_bytes(4, "big") and again[16:20] == first[16:20]
        assert again[:12] == first[:12] and again[20:] == first[20:], (
            f"(a) answers differ:\n{first.hex()}\n{again.hex()}")

        # (b) another connection, another Origin-Host, a new End-to-End id
        with RawPeer(ocs.port, PGW_B) as b:
            dup = ccr(sid, UPDATE, 1, PGW_B, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(3000))])
            other, _ = b.exchange(dup)
            assert other[12:16] == dup.header.hop_by_hop_identifier.to_bytes(4, "big")
            assert other[16:20] == dup.header.end_to_end_identifier.to_bytes(4, "big")
            assert without_ids(other) == without_ids(first), (
                f"(b) answers differ:\n{first.hex()}\n{other.hex()}")

            shown = ocs.show("rita")
            assert (shown_main(shown)["amount"], shown_main(shown)["reserved"]) == (997, 10)
            assert [e["amount"] for e in session_events(ocs.events("rita"), sid)] == [3]

            # (c) U2 (USU 4000: 4 cents) and its duplicate race on the two connections
            u2a = ccr(sid, UPDATE, 2, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(4000))])
            u2b = ccr(sid, UPDATE, 2, PGW_B, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(4000))])
            a.send(u2a)
            b.send(u2b)
            on_a, on_b = a.recv_frame(), b.recv_frame()
            assert on_a[12:20] == u2a.as_bytes()[12:20] and on_b[12:20] == u2b.as_bytes()[12:20]
            assert without_ids(on_a) == without_ids(on_b)
            assert result_code_of(on_a) == 2001

            # the session ends from pgw-b; the CCR-T repeated from pgw-a is a duplicate too
            t_b, cca = b.exchange(ccr(sid, TERMINATION, 3, PGW_B, mscc=[(RATING_GROUP, None, usu_octets(0))]))
            check_cca(cca, sid, TERMINATION, 3, 2001)
            t_a, _ = a.exchange(ccr(sid, TERMINATION, 3, mscc=[(RATING_GROUP, None, usu_octets(0))]))
            assert without_ids(t_a) == without_ids(t_b)

    snap = stop(ocs)
    main = main_bucket(snap, "rita")
    assert (main.amount, main.reserved) == (993, 0)
    assert sid not in snap["sessions"]
    events = session_events(snap, sid)
    assert [(e["request_number"], e["units"], e["amount"]) for e in events] == [
        (1, {"total_octets": 3000}, 3), (2, {"total_octets": 4000}, 4)]


# ------------------------------------------------------------------ 6. failover
def test_session_continues_on_another_connection(ocs):
    """fred (1000): CCR-I from pgw-a; pgw-a goes away; pgw-b (another python-diameter
    Node, another connection and Origin-Host) continues the session: U1 USU 2000
    (2 cents), T USU 1000 (1 cent)."""
    a, b = NodePeer(ocs.port, PGW_A), NodePeer(ocs.port, PGW_B)
    try:
        a.open()
        sid = a.session_id()
        assert sid.startswith(PGW_A + ";")
        cca = a.request(ccr(sid, INITIAL, 0, msisdn=MSISDN["fred"], ids=False,
                            mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, INITIAL, 0, 2001)
        assert cca.cc_session_failover == 1       # FAILOVER_SUPPORTED: the session may move
        check_grant(only_mscc(cca), 10000)
        a.disconnect()

        b.open()
        cca = b.request(ccr(sid, UPDATE, 1, PGW_B, ids=False,
                            mscc=[(RATING_GROUP, rsu_octets(), usu_octets(2000))]))
        check_cca(cca, sid, UPDATE, 1, 2001)
        check_grant(only_mscc(cca), 10000)
        cca = b.request(ccr(sid, TERMINATION, 2, PGW_B, ids=False,
                            mscc=[(RATING_GROUP, None, usu_octets(1000))]))
        check_cca(cca, sid, TERMINATION, 2, 2001)
        b.disconnect()
    finally:
        stop_all([a, b])

    snap = stop(ocs)
    main = main_bucket(snap, "fred")
    assert (main.amount, main.reserved) == (997, 0)
    assert sid not in snap["sessions"]
    assert [(e["request_number"], e["amount"]) for e in session_events(snap, sid)] == [(1, 2), (2, 1)]


def test_session_and_answers_survive_a_node_restart(ocs):
    """alice (1000): CCR-I, then the node restarts on the same store. The CCR-I
    retransmitted (T flag, same ids) gets its original answer from the store, and
    the session goes on: U1 USU 2000 (2 cents), T USU 1000 (1 cent)."""
    sid = f"{PGW_A};restart;1"
    with RawPeer(ocs.port, PGW_A) as raw:
        initial = ccr(sid, INITIAL, 0, msisdn=MSISDN["alice"], mscc=[(RATING_GROUP, rsu_octets(), None)])
        request = initial.as_bytes()
        first, cca = raw.exchange(request)
        check_cca(cca, sid, INITIAL, 0, 2001)
        check_grant(only_mscc(cca), 10000)
    assert ocs.stop() == 0
    ocs.start()

    with RawPeer(ocs.port, PGW_A) as raw:
        hbh = next_id()
        raw.send(with_t_flag(request, hbh))
        again = raw.recv_frame()
        assert again[:12] == first[:12] and again[16:] == first[16:]
        _, cca = raw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(2000))]))
        check_cca(cca, sid, UPDATE, 1, 2001)
        check_grant(only_mscc(cca), 10000)
        _, cca = raw.exchange(ccr(sid, TERMINATION, 2, mscc=[(RATING_GROUP, None, usu_octets(1000))]))
        check_cca(cca, sid, TERMINATION, 2, 2001)

    snap = stop(ocs)
    main = main_bucket(snap, "alice")
    assert (main.amount, main.reserved) == (997, 0)
    assert [(e["request_number"], e["amount"]) for e in session_events(snap, sid)] == [(1, 2), (2, 1)]


def test_out_of_sequence_updates_are_both_answered_and_debited(ocs):
    """RFC 8506 5.1.2 (diameter.md B.7): with several rating groups a client may have
    several CCR-Us in flight, and the server SHOULD NOT treat an out-of-sequence one
    as an error. alice (1000): CCR-I for RG 10 and RG 20 (10000 octets each); then
    U2 (RG 20, USU 3000) and U1 (RG 10, USU 5000) arrive in that order. Expected:
    both 2001, 3 + 5 cents debited, 992 left after the CCR-T."""
    sid = f"{PGW_A};alice;parallel"
    with RawPeer(ocs.port, PGW_A) as raw:
        _, cca = raw.exchange(ccr(sid, INITIAL, 0, msisdn=MSISDN["alice"],
                                  mscc=[(10, rsu_octets(), None), (20, rsu_octets(), None)]))
        check_cca(cca, sid, INITIAL, 0, 2001)
        assert [(m.rating_group, m.granted_service_unit.cc_total_octets)
                for m in cca.multiple_services_credit_control] == [(10, 10000), (20, 10000)]
        u2 = ccr(sid, UPDATE, 2, mscc=[(20, rsu_octets(), usu_octets(3000))])
        u1 = ccr(sid, UPDATE, 1, mscc=[(10, rsu_octets(), usu_octets(5000))])
        raw.send(u2)
        raw.send(u1)
        answers = {}
        for _ in range(2):
            frame = raw.recv_frame()
            answers[int.from_bytes(frame[12:16], "big")] = frame
        assert result_code_of(answers[u2.header.hop_by_hop_identifier]) == 2001
        assert result_code_of(answers[u1.header.hop_by_hop_identifier]) == 2001, (
            "the out-of-sequence CCR-U was refused")
        _, cca = raw.exchange(ccr(sid, TERMINATION, 3, mscc=[(10, None, usu_octets(0)),
                                                             (20, None, usu_octets(0))]))
        check_cca(cca, sid, TERMINATION, 3, 2001)

    snap = stop(ocs)
    main = main_bucket(snap, "alice")
    assert (main.amount, main.reserved) == (992, 0)
    assert sorted((e["rating_group"], e["amount"]) for e in session_events(snap, sid)) == [(10, 5), (20, 3)]


# ------------------------------------------------------------------ 7. one-time events, errors
def test_check_balance_price_enquiry_refund(ocs):
    """eve (100): CHECK_BALANCE for 10 SMS (70: enough) and 20 SMS (140: not);
    PRICE_ENQUIRY for 5 SMS (35 cents); REFUND_ACCOUNT of 2 SMS (+14)."""
    eve = MSISDN["eve"]
    with RawPeer(ocs.port, PGW_A) as raw:
        def event(n, action, units):
            sid = f"{PGW_A};eve;{n}"
            _, cca = raw.exchange(ccr(sid, EVENT, 0, context=SMS, msisdn=eve, requested_action=action,
                                      rsu=RequestedServiceUnit(cc_service_specific_units=units)))
            check_cca(cca, sid, EVENT, 0, 2001)
            return cca

        cca = event(1, CHECK_BALANCE, 10)
        assert cca.check_balance_result == 0                  # ENOUGH_CREDIT
        assert cca.granted_service_unit is None and cca.cost_information is None
        cca = event(2, CHECK_BALANCE, 20)
        assert cca.check_balance_result == 1                  # NO_CREDIT
        cca = event(3, PRICE_ENQUIRY, 5)
        cost = cca.cost_information
        assert (cost.unit_value.value_digits, cost.unit_value.exponent, cost.currency_code) == (35, -2, EUR)
        assert cca.granted_service_unit is None and cca.check_balance_result is None
        shown = ocs.show("eve")
        assert (shown_main(shown)["amount"], shown_main(shown)["reserved"]) == (100, 0)
        refund = ccr(f"{PGW_A};eve;4", EVENT, 0, context=SMS, msisdn=eve, requested_action=REFUND_ACCOUNT,
                     rsu=RequestedServiceUnit(cc_service_specific_units=2))
        first, cca = raw.exchange(refund)
        check_cca(cca, f"{PGW_A};eve;4", EVENT, 0, 2001)
        assert cca.granted_service_unit.cc_service_specific_units == 2

    # RFC 8506 5.7: a refund is retransmitted (T flag) until answered; here on a new
    # connection with a new End-to-End id: the same answer, one refund
    with RawPeer(ocs.port, PGW_A) as other:
        hbh = next_id()
        again = with_t_flag(refund.as_bytes(), hbh)
        again = again[:16] + next_id().to_bytes(4, "big") + again[20:]
        other.send(again)
        assert without_ids(other.recv_frame()) == without_ids(first)

    snap = stop(ocs)
    main = main_bucket(snap, "eve")
    assert (main.amount, main.reserved) == (114, 0)
    events = charged_events(snap, "eve")
    assert [(e["session"], e["type"], e["units"], e["amount"], e["impacts"], e["balance_after"])
            for e in events] == [
        (f"{PGW_A};eve;4", "refund", {"service_specific_units": 2}, -14, [["main", 14]], {"money": 114})]


def test_unknown_service_context_5031_with_failed_avp(ocs):
    with RawPeer(ocs.port, PGW_A) as raw:
        for n, rtype, extra in [(1, INITIAL, {"mscc": [(RATING_GROUP, rsu_octets(), None)]}),
                                (2, EVENT, {"requested_action": DIRECT_DEBITING,
                                            "rsu": RequestedServiceUnit(cc_service_specific_units=1)})]:
            sid = f"{PGW_A};context;{n}"
            frame, cca = raw.exchange(ccr(sid, rtype, 0, context="32299@3gpp.org",
                                          msisdn=MSISDN["alice"], **extra))
            check_cca(cca, sid, rtype, 0, 5031)
            assert cca.multiple_services_credit_control == [] and cca.granted_service_unit is None
            children = failed_avp_children(frame)
            assert [(code, data) for code, _, _, data in children] == [
                (SERVICE_CONTEXT_ID, b"32299@3gpp.org")]

    snap = stop(ocs)
    assert not snap["sessions"] and charged_events(snap, "alice") == []
    assert (main_bucket(snap, "alice").amount, main_bucket(snap, "alice").reserved) == (1000, 0)


def answer_server_request(raw, kind, sid: str) -> None:
    """The node's RAR/ASR for the session arrives; the P-GW answers it 2001."""
    req = PdMessage.from_bytes(raw.recv_frame())
    assert isinstance(req, kind) and req.session_id == sid, req
    ans = req.to_answer()
    ans.session_id, ans.result_code = req.session_id, 2001
    ans.origin_host, ans.origin_realm = PGW_A.encode(), REALM.encode()
    raw.send(ans)


def test_suspended_account_4010(ocs):
    """carol (1000) opens a session (10 reserved); the operator suspends her while
    the node runs; the next CCR-U (USU 2000) is 4010: the used units are still
    debited (2 cents), the reservation released, the session closed."""
    with RawPeer(ocs.port, PGW_A) as raw:
        sid = f"{PGW_A};carol;1"
        _, cca = raw.exchange(ccr(sid, INITIAL, 0, msisdn=MSISDN["carol"],
                                  mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, INITIAL, 0, 2001)
        done = ocs.cli("suspend", "carol")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "carol: suspended (1 session(s) notified)"
        answer_server_request(raw, ReAuthRequest, sid)      # RFC 8506 §5.5: re-authorize

        _, cca = raw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(2000))]))
        check_cca(cca, sid, UPDATE, 1, 4010)
        assert all(m.granted_service_unit is None for m in cca.multiple_services_credit_control)
        assert cca.cc_session_failover is None

        # the session is gone; new sessions and SMS are refused too
        _, cca = raw.exchange(ccr(sid, UPDATE, 2, mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, UPDATE, 2, 5002)
        sid2 = f"{PGW_A};carol;2"
        _, cca = raw.exchange(ccr(sid2, INITIAL, 0, msisdn=MSISDN["carol"],
                                  mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid2, INITIAL, 0, 4010)
        assert cca.multiple_services_credit_control == []
        sid3 = f"{PGW_A};carol;3"
        _, cca = raw.exchange(ccr(sid3, EVENT, 0, context=SMS, msisdn=MSISDN["carol"],
                                  requested_action=DIRECT_DEBITING,
                                  rsu=RequestedServiceUnit(cc_service_specific_units=1)))
        check_cca(cca, sid3, EVENT, 0, 4010)
        assert cca.granted_service_unit is None

    snap = stop(ocs)
    main = main_bucket(snap, "carol")
    assert (main.amount, main.reserved) == (998, 0)
    assert not snap["sessions"]
    assert [(e["session"], e["type"], e["amount"]) for e in charged_events(snap, "carol")] == [
        (sid, "usage", 2)]


def test_account_closed_mid_session_5030_releases_reservation(ocs):
    """carol (1000) opens a session (10 reserved); the operator closes the account
    while the node runs; the next CCR-U (USU 2000) is 5030: the used units are
    debited (2 cents, RFC 8506 Table 6: "not processed OK: debit used units"),
    the reservation goes back and the session ends (5002 after)."""
    with RawPeer(ocs.port, PGW_A) as raw:
        sid = f"{PGW_A};carol;closed"
        _, cca = raw.exchange(ccr(sid, INITIAL, 0, msisdn=MSISDN["carol"],
                                  mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, INITIAL, 0, 2001)
        done = ocs.cli("close", "carol")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "carol: closed (1 session(s) notified)"
        answer_server_request(raw, AbortSessionRequest, sid)
        _, cca = raw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(2000))]))
        check_cca(cca, sid, UPDATE, 1, 5030)
        assert all(m.granted_service_unit is None for m in cca.multiple_services_credit_control)
        _, cca = raw.exchange(ccr(sid, UPDATE, 2, mscc=[(RATING_GROUP, rsu_octets(), None)]))
        check_cca(cca, sid, UPDATE, 2, 5002)

    snap = stop(ocs)
    assert sid not in snap["sessions"]
    main = main_bucket(snap, "carol")
    assert main.reserved == 0, f"{main.reserved} cents still reserved for a session that is gone"
    assert main.amount == 998
    assert [(e["type"], e["amount"]) for e in session_events(snap, sid)] == [("usage", 2)]


def test_update_for_unknown_session_5002(ocs):
    with RawPeer(ocs.port, PGW_A) as raw:
        sid = f"{PGW_A};never-opened;1"
        _, cca = raw.exchange(ccr(sid, UPDATE, 1, mscc=[(RATING_GROUP, rsu_octets(), usu_octets(1000))]))
        check_cca(cca, sid, UPDATE, 1, 5002)
        assert cca.multiple_services_credit_control == []
        _, cca = raw.exchange(ccr(sid, TERMINATION, 2, mscc=[(RATING_GROUP, None, usu_octets(1000))]))
        check_cca(cca, sid, TERMINATION, 2, 5002)

    snap = stop(ocs)
    assert not snap["sessions"] and [e for e in snap["events"] if e["session"] is not None] == []


def test_initial_and_event_without_subscription_id_5005(ocs):
    with RawPeer(ocs.port, PGW_A) as raw:
        for n, rtype, extra in [(1, INITIAL, {"mscc": [(RATING_GROUP, rsu_octets(), None)]}),
                                (2, EVENT, {"context": SMS, "requested_action": DIRECT_DEBITING,
                                            "rsu": RequestedServiceUnit(cc_service_specific_units=1)})]:
            sid = f"{PGW_A};anonymous;{n}"
            frame, cca = raw.exchange(ccr(sid, rtype, 0, **extra))
            check_cca(cca, sid, rtype, 0, 5005)
            assert cca.multiple_services_credit_control == [] and cca.granted_service_unit is None
            (failed,) = failed_avp_children(frame)
            code, flags, vendor, data = failed
            assert (code, vendor) == (SUBSCRIPTION_ID, 0)
            inner = sorted(c for c, _, _, _ in avps(b"\0" * 20 + data))
            assert inner == [444, 450], "an example Subscription-Id: Subscription-Id-Data and -Type"

    snap = stop(ocs)
    assert not snap["sessions"] and [e for e in snap["events"] if e["session"] is not None] == []


# ------------------------------------------------------------------ 8. Tcc
def test_abandoned_session_released_by_tcc(ocs):
    """erin's plan grants with Validity-Time 1 s; tcc_factor 2, sweeper every 0.2 s.
    CCR-Us every 0.3 s keep the session open past the first Tcc (each restarts it);
    then the session is abandoned: its 10 cents are released within a few seconds,
    with a session_expired event, and a later CCR-U for it is 5002."""
    sid = f"{PGW_A};erin;1"
    with RawPeer(ocs.port, PGW_A) as raw:
        _, cca = raw.exchange(ccr(sid, INITIAL, 0, msisdn=MSISDN["erin"],
                                  mscc=[(RATING_GROUP, rsu_octets(), None)]))
        opened = time.monotonic()
        check_cca(cca, sid, INITIAL, 0, 2001)
        check_grant(only_mscc(cca), 10000, validity=1)
        number = 0
        while time.monotonic() - opened < 2.5:       # Tcc of the CCR-I: at most 2 s
            time.sleep(0.3)
            number += 1
            _, cca = raw.exchange(ccr(sid, UPDATE, number,
                                      mscc=[(RATING_GROUP, rsu_octets(), usu_octets(0))]))
            check_cca(cca, sid, UPDATE, number, 2001)
            check_grant(only_mscc(cca), 10000, validity=1)
        last = time.monotonic()
        assert last - opened > 2.0

    deadline = last + 10.0
    while True:
        shown = ocs.show("erin")
        if shown["sessions"] == [] and shown_main(shown)["reserved"] == 0:
            released = time.monotonic() - last
            break
        assert time.monotonic() < deadline, f"reservation still held after 10 s: {shown}"
        time.sleep(0.2)
    # Tcc = 2 x 1 s on whole seconds: never before 1 s, and the sweeper runs every 0.2 s
    assert 1.0 <= released < 10.0
    assert shown_main(shown)["amount"] == 1000
    expired = session_events(ocs.events("erin"), sid)
    assert [(e["type"], e["request_number"], e["amount"], e["released"], e["balance_after"])
            for e in expired] == [("session_expired", number, 0, [["main", 10]], {"money": 1000})]

    with RawPeer(ocs.port, PGW_B) as raw:
        _, cca = raw.exchange(ccr(sid, UPDATE, number + 1, PGW_B,
                                  mscc=[(RATING_GROUP, rsu_octets(), usu_octets(1000))]))
        check_cca(cca, sid, UPDATE, number + 1, 5002)

    snap = stop(ocs)
    main = main_bucket(snap, "erin")
    assert (main.amount, main.reserved) == (1000, 0)
    assert sid not in snap["sessions"]
    assert [e["type"] for e in session_events(snap, sid)] == ["session_expired"]
