"""The sans-I/O peer connection: capabilities exchange, watchdog, DPR/DPA,
E-bit errors and duplicates, driven by hand-fed bytes and a fake clock."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocs.diameter.capabilities import LocalPeer
from ocs.diameter.duplicates import DuplicateCache
from ocs.diameter.events import (AnswerReceived, ConnectionClosed, DisconnectRequested, ErrorAnswered,
                                 PeerOpened, RequestFailed, RequestReceived, WatchdogChanged)
from ocs.diameter.framing import Framer
from ocs.diameter.message import FLAG_T, decode_message, request
from ocs.diameter.peer import PeerConnection, PeerState

from wire_samples import sample

SERVER = LocalPeer("ocs.example.net", "example.net")
CLIENT = LocalPeer("pgw.example.net", "example.net")


def server(dictionary, **kw):
    kw.setdefault("supports", lambda app, code: (app, code) == (4, 272))
    return PeerConnection(SERVER, dictionary, initiator=False, now=0.0, rng=random.Random(1), **kw)


def events(peer):
    out = []
    while (e := peer.next_event()) is not None:
        out.append(e)
    return out


def answers(peer, dictionary):
    frames, error = Framer().feed(peer.data_to_send())
    assert error is None
    return [decode_message(f, dictionary)[0] for f in frames]


def opened(dictionary, **kw):
    p = server(dictionary, **kw)
    p.receive_data(sample("CER"), 1.0)
    [cea] = answers(p, dictionary)
    assert cea.get("Result-Code") == 2001
    assert [type(e) for e in events(p)] == [PeerOpened]
    return p


def test_cer_cea_advertises_credit_control_and_3gpp(dictionary):
    p = server(dictionary)
    p.receive_data(sample("CER"), 1.0)
    [cea] = answers(p, dictionary)
    assert cea.code == 257 and not cea.is_request and not cea.is_error
    assert (cea.hop_by_hop, cea.end_to_end) == (0x11111111, 0x22222222)
    assert cea.get("Result-Code") == 2001
    assert [a.value for a in cea.find_all("Auth-Application-Id")] == [4]
    assert [a.value for a in cea.find_all("Supported-Vendor-Id")] == [10415]
    assert cea.get("Origin-Host") == "ocs.example.net"
    [ev] = events(p)
    assert ev.peer.origin_host == "pgw.example.net" and ev.peer.common_application_ids == {4}
    assert p.state is PeerState.R_OPEN


def cer_with(dictionary, apps=(), acct=(), vsai=(), host="pgw.example.net"):
    items = [("Origin-Host", host), ("Origin-Realm", "example.net"), ("Host-IP-Address", "192.0.2.1"),
             ("Vendor-Id", 0), ("Product-Name", "x")]
    items += [("Auth-Application-Id", a) for a in apps] + [("Acct-Application-Id", a) for a in acct]
    items += [("Vendor-Specific-Application-Id", [("Vendor-Id", 10415), ("Auth-Application-Id", a)])
              for a in vsai]
    return request(dictionary, "Capabilities-Exchange-Request", items, hop_by_hop=5, end_to_end=6).encode()


@pytest.mark.parametrize("kw,ok", [
    (dict(apps=[16777238]), False),          # Gx only: nothing in common
    (dict(acct=[3]), False),
    (dict(vsai=[4]), True),                  # inside Vendor-Specific-Application-Id counts
    (dict(apps=[0xFFFFFFFF]), True),         # relay supports everything
    (dict(apps=[1, 4]), True),
])
def test_common_application_rule(dictionary, kw, ok):
    p = server(dictionary)
    p.receive_data(cer_with(dictionary, **kw), 1.0)
    [cea] = answers(p, dictionary)
    if ok:
        assert cea.get("Result-Code") == 2001 and p.state is PeerState.R_OPEN
    else:
        assert cea.get("Result-Code") == 5010 and not cea.is_error
        assert p.state is PeerState.CLOSED
        assert isinstance(events(p)[-1], ConnectionClosed)


def test_allowlist_unknown_peer_3010(dictionary):
    p = server(dictionary, allowed_peers=frozenset({"PGW.example.net"}))
    p.receive_data(cer_with(dictionary, apps=[4], host="intruder.example.net"), 1.0)
    [cea] = answers(p, dictionary)
    assert cea.get("Result-Code") == 3010 and cea.is_error
    assert p.state is PeerState.CLOSED
    p2 = server(dictionary, allowed_peers=frozenset({"PGW.example.net"}))
    p2.receive_data(cer_with(dictionary, apps=[4]), 1.0)        # case-insensitive match
    assert answers(p2, dictionary)[0].get("Result-Code") == 2001


def test_first_message_not_cer_closes(dictionary):
    p = server(dictionary)
    p.receive_data(sample("DWR"), 1.0)
    assert p.data_to_send() == b""
    assert p.state is PeerState.CLOSED
    assert events(p) == [ConnectionClosed("first message was not a CER")]


def test_cer_missing_origin_host_5005(dictionary):
    p = server(dictionary)
    bad = request(dictionary, "Capabilities-Exchange-Request", [
        ("Origin-Realm", "example.net"), ("Host-IP-Address", "192.0.2.1"), ("Vendor-Id", 0),
        ("Product-Name", "x"), ("Auth-Application-Id", 4)]).encode()
    p.receive_data(bad, 1.0)
    [cea] = answers(p, dictionary)
    assert cea.get("Result-Code") == 5005
    assert cea.find("Failed-AVP").value[0].code == 264
    assert p.state is PeerState.CLOSED


def test_cer_timeout(dictionary):
    p = server(dictionary, cer_timeout=10.0)
    assert p.get_timer() == 10.0
    p.handle_timer(9.9)
    assert p.state is PeerState.WAIT_CER
    p.handle_timer(10.0)
    assert p.state is PeerState.CLOSED


def test_dwr_answered(dictionary):
    p = opened(dictionary)
    p.receive_data(sample("DWR"), 2.0)
    [dwa] = answers(p, dictionary)
    assert (dwa.code, dwa.is_request, dwa.get("Result-Code")) == (280, False, 2001)
    assert (dwa.hop_by_hop, dwa.end_to_end) == (1, 2)
    assert events(p) == []


def test_watchdog_sends_dwr_then_suspect_then_down(dictionary):
    p = opened(dictionary, tw=30.0)
    t = p.get_timer()
    assert 1.0 + 28 <= t <= 1.0 + 32                     # Tw = 30 ± 2 s jitter
    p.handle_timer(t)
    [dwr] = answers(p, dictionary)
    assert (dwr.code, dwr.is_request) == (280, True)
    t2 = p.get_timer()
    p.handle_timer(t2)                                   # no DWA: failover
    assert events(p) == [WatchdogChanged("SUSPECT")]
    assert p.state is PeerState.R_OPEN
    p.handle_timer(p.get_timer())                        # second expiry: DOWN, close
    evs = events(p)
    assert WatchdogChanged("DOWN") in evs and isinstance(evs[-1], ConnectionClosed)
    assert p.state is PeerState.CLOSED


def test_any_traffic_resets_tw(dictionary):
    p = opened(dictionary, tw=30.0)
    first = p.get_timer()
    p.receive_data(sample("DWR"), 20.0)
    assert p.get_timer() > first
    p.data_to_send()


def test_dwa_clears_pending_and_suspect_recovers(dictionary):
    p = opened(dictionary, tw=6.0)
    p.handle_timer(p.get_timer())
    [dwr] = answers(p, dictionary)
    p.handle_timer(p.get_timer())
    assert events(p) == [WatchdogChanged("SUSPECT")]
    dwa = dwr.answer(2001).extend([("Origin-Host", "pgw.example.net"), ("Origin-Realm", "example.net")])
    p.receive_data(dwa.encode(), 20.0)
    assert events(p) == [WatchdogChanged("OKAY")]
    assert p.watchdog_state == "OKAY"


def test_dpr_from_peer(dictionary):
    p = opened(dictionary)
    p.receive_data(sample("DPR"), 2.0)
    [dpa] = answers(p, dictionary)
    assert (dpa.code, dpa.is_request, dpa.get("Result-Code")) == (282, False, 2001)
    assert events(p) == [DisconnectRequested(0)]
    assert p.state is PeerState.CLOSING
    p.receive_data(b"", 2.5)                             # the DPR sender closes
    assert p.state is PeerState.CLOSED


def test_our_dpr_then_dpa_closes(dictionary):
    p = opened(dictionary)
    p.disconnect(3.0, cause=1)
    [dpr] = answers(p, dictionary)
    assert dpr.get("Disconnect-Cause") == 1 and p.state is PeerState.CLOSING
    dpa = dpr.answer(2001).extend([("Origin-Host", "pgw.example.net"), ("Origin-Realm", "example.net")])
    p.receive_data(dpa.encode(), 3.1)
    assert p.state is PeerState.CLOSED


def test_our_dpr_times_out(dictionary):
    p = opened(dictionary, dpa_timeout=5.0)
    p.disconnect(3.0)
    p.data_to_send()
    p.handle_timer(8.0)
    assert p.state is PeerState.CLOSED


def ccr(dictionary, app=4, code=272, e2e=77, **extra):
    items = [("Session-Id", "pgw;1;1"), ("Origin-Host", "pgw.example.net"), ("Origin-Realm", "example.net"),
             ("Destination-Realm", extra.pop("realm", "example.net")), ("Auth-Application-Id", 4),
             ("Service-Context-Id", "32251@3gpp.org"), ("CC-Request-Type", 1), ("CC-Request-Number", 0)]
    items += list(extra.items())
    m = request(dictionary, "Credit-Control-Request", items, hop_by_hop=9, end_to_end=e2e)
    m.application_id, m.code = app, code
    return m


@pytest.mark.parametrize("mutate,code", [
    (dict(app=16777238), 3007),                          # application not advertised
    (dict(code=8388620), 3001),                          # no such command
    (dict(realm="other.net"), 3003),
    ({"Destination-Host": "elsewhere.example.net"}, 3002),
])
def test_protocol_errors_have_e_bit(dictionary, mutate, code):
    p = opened(dictionary)
    p.receive_data(ccr(dictionary, **mutate).encode(), 2.0)
    [ans] = answers(p, dictionary)
    assert ans.get("Result-Code") == code and ans.is_error and not ans.is_request
    assert ans.get("Session-Id") == "pgw;1;1" and ans.get("Origin-Host") == "ocs.example.net"
    assert ans.hop_by_hop == 9 and ans.end_to_end == 77
    assert ans.find("Destination-Realm") is None
    assert [type(e) for e in events(p)] == [ErrorAnswered]


def test_e_bit_in_request_3008(dictionary):
    p = opened(dictionary)
    m = ccr(dictionary)
    m.flags |= 0x20
    p.receive_data(m.encode(), 2.0)
    [ans] = answers(p, dictionary)
    assert ans.get("Result-Code") == 3008 and ans.is_error


def test_p_bit_on_dwr_3008(dictionary):
    p = opened(dictionary)
    dwr = bytearray(sample("DWR"))
    dwr[4] |= 0x40
    p.receive_data(bytes(dwr), 2.0)
    [ans] = answers(p, dictionary)
    assert ans.get("Result-Code") == 3008 and ans.is_error and ans.code == 280


def test_grammar_error_answered_on_application_grammar(dictionary):
    p = opened(dictionary)
    m = ccr(dictionary)
    m.avps = [a for a in m.avps if a.code != 461]          # drop Service-Context-Id
    p.receive_data(m.encode(), 2.0)
    [ans] = answers(p, dictionary)
    assert ans.get("Result-Code") == 5005 and not ans.is_error
    # a CCA the peer can parse: the required CCA AVPs are copied from the request
    assert (ans.get("Auth-Application-Id"), ans.get("CC-Request-Type"), ans.get("CC-Request-Number")) == (4, 1, 0)
    assert ans.find("Failed-AVP").value[0].code == 461


def test_valid_request_reaches_handler_and_duplicates_get_cached_answer(dictionary):
    cache = DuplicateCache()
    p = opened(dictionary, duplicates=cache)
    p.receive_data(ccr(dictionary).encode(), 2.0)
    [ev] = events(p)
    assert isinstance(ev, RequestReceived)
    # a retransmission while the first is still being handled is dropped
    again = ccr(dictionary)
    again.flags |= FLAG_T
    p.receive_data(again.encode(), 2.1)
    assert events(p) == [] and p.data_to_send() == b""
    answer = ev.message.answer(4012).extend([("Origin-Host", "ocs.example.net"), ("Origin-Realm", "example.net")])
    p.send_answer(answer)
    first = p.data_to_send()
    # after the answer: a duplicate (other hop-by-hop, T flag) gets the same bytes but its own hop-by-hop
    again.hop_by_hop = 1234
    p.receive_data(again.encode(), 3.0)
    assert events(p) == []
    second = p.data_to_send()
    assert second[:12] == first[:12] and second[16:] == first[16:]
    assert int.from_bytes(second[12:16], "big") == 1234
    # another connection of the same process also recognises it
    q = opened(dictionary, duplicates=cache)
    q.receive_data(again.encode(), 4.0)
    assert events(q) == [] and q.data_to_send()[16:] == first[16:]
    # a new End-to-End id is a new request
    p.receive_data(ccr(dictionary, e2e=78).encode(), 5.0)
    assert isinstance(events(p)[0], RequestReceived)


def test_duplicate_cache_expires():
    c = DuplicateCache(lifetime=240.0)
    c.complete(("h", 1), 0.0, b"x")
    assert c.lookup(("h", 1), 239.0) == b"x"
    assert c.lookup(("h", 1), 241.0) is None


def test_client_side_cer_request_answer(dictionary):
    cli = PeerConnection(CLIENT, dictionary, initiator=True, now=0.0, rng=random.Random(2))
    srv = server(dictionary)
    srv.receive_data(cli.data_to_send(), 0.1)
    cli.receive_data(srv.data_to_send(), 0.2)
    assert [type(e) for e in events(cli)] == [PeerOpened] and cli.state is PeerState.I_OPEN
    events(srv)
    hbh = cli.send_request(ccr(dictionary))
    srv.receive_data(cli.data_to_send(), 0.3)
    [req] = events(srv)
    srv.send_answer(req.message.answer(2001).extend([("Origin-Host", "ocs"), ("Origin-Realm", "example.net")]))
    cli.receive_data(srv.data_to_send(), 0.4)
    [ans] = events(cli)
    assert isinstance(ans, AnswerReceived) and ans.message.hop_by_hop == hbh
    # a request still pending when the connection drops is failed, not forgotten
    hbh2 = cli.send_request(ccr(dictionary, e2e=99))
    cli.receive_data(b"", 0.5)
    evs = events(cli)
    assert RequestFailed(hbh2, "peer closed the connection") in evs


def test_framing_error_answers_and_closes(dictionary):
    p = opened(dictionary)
    bad = bytes([1]) + (19).to_bytes(3, "big") + bytes.fromhex("80000110") + bytes(12)
    p.receive_data(sample("DWR") + bad, 2.0)
    out = answers(p, dictionary)
    assert [m.code for m in out] == [280, 272]
    assert out[1].get("Result-Code") == 5015
    assert p.state is PeerState.CLOSED


@given(st.binary(max_size=400))
def test_open_peer_survives_arbitrary_bytes(dictionary, data):
    p = opened(dictionary)
    p.receive_data(data, 2.0)
    p.data_to_send()
    # the backstop must never be what saved us: every read of peer data is guarded
    assert not any("unexpected decode failure" in getattr(e, "reason", "") for e in events(p))


# ---- hostile input: found by an independent review; each used to raise ----------

def raw_avp(code, data, flags=0x40, vendor=None, length=None):
    if vendor is not None:
        head = (code.to_bytes(4, "big") + bytes([flags | 0x80])
                + (length or 12 + len(data)).to_bytes(3, "big") + vendor.to_bytes(4, "big"))
    else:
        head = code.to_bytes(4, "big") + bytes([flags]) + (length or 8 + len(data)).to_bytes(3, "big")
    b = head + data
    return b + b"\0" * (-len(b) & 3)


def frame(code, flags, app, body, hbh=7, e2e=8):
    return (bytes([1]) + (20 + len(body)).to_bytes(3, "big") + bytes([flags]) + code.to_bytes(3, "big")
            + app.to_bytes(4, "big") + hbh.to_bytes(4, "big") + e2e.to_bytes(4, "big") + body)


def enc(dictionary, name, value):
    from ocs.diameter.avp import make_avp
    return make_avp(dictionary, name, value).encode()


def ccr_body(dictionary, origin_host=None, realm=None, number=None):
    e = lambda n, v: enc(dictionary, n, v)  # noqa: E731
    return (e("Session-Id", "s;1") + (origin_host or e("Origin-Host", "pgw.example.net"))
            + e("Origin-Realm", "example.net") + (realm or e("Destination-Realm", "example.net"))
            + e("Auth-Application-Id", 4) + e("Service-Context-Id", "32251@3gpp.org")
            + e("CC-Request-Type", 1) + (number or e("CC-Request-Number", 0)))


def test_hostile_values_are_answered_not_raised(dictionary):
    p = opened(dictionary)
    cases = [
        (raw_avp(264, b"\xffbad"), dict(origin_host=raw_avp(264, b"\xffbad")), 5004),
        (raw_avp(283, b"\xfe.net"), dict(realm=raw_avp(283, b"\xfe.net")), 5004),
        (raw_avp(415, b"\0\0\0\0\1"), dict(number=raw_avp(415, b"\0\0\0\0\1")), 5014),
    ]
    for bad, parts, code in cases:
        p.receive_data(frame(272, 0xC0, 4, ccr_body(dictionary, **parts)), 2.0)
        [ans] = answers(p, dictionary)
        assert ans.get("Result-Code") == code
        # the bad AVP is in Failed-AVP only, never echoed into the answer body
        assert [a.encode() for a in ans.find("Failed-AVP").value] == [bad]
        assert bad not in [a.encode() for a in ans.avps]
        events(p)
    p.receive_data(frame(282, 0x80, 0, enc(dictionary, "Origin-Host", "pgw.example.net")
                         + enc(dictionary, "Origin-Realm", "example.net") + raw_avp(273, b"\0\0\0\0\1")), 3.0)
    [dpa] = answers(p, dictionary)
    assert dpa.get("Result-Code") == 5014 and events(p) == [ErrorAnswered(282, 5014, "Disconnect-Cause: length 5, expected 4"),
                                                            DisconnectRequested(None)]


@pytest.mark.parametrize("tail", [raw_avp(999, b"", flags=0, length=200)[:8], b"\0\0\0\0"])
def test_broken_cer_gets_5014_cea(dictionary, tail):
    e = lambda n, v: enc(dictionary, n, v)  # noqa: E731
    body = (e("Origin-Host", "pgw.example.net") + e("Origin-Realm", "example.net")
            + e("Host-IP-Address", "192.0.2.1") + e("Vendor-Id", 0) + e("Product-Name", "x")
            + e("Auth-Application-Id", 4) + tail)
    p = server(dictionary)
    p.receive_data(frame(257, 0x80, 0, body, 1, 2), 1.0)
    [cea] = answers(p, dictionary)
    assert cea.get("Result-Code") == 5014 and p.state is PeerState.CLOSED


def test_invalid_cea_closes(dictionary):
    cli = PeerConnection(CLIENT, dictionary, initiator=True, now=0.0, rng=random.Random(2))
    [cer] = answers(cli, dictionary)
    e = lambda n, v: enc(dictionary, n, v)  # noqa: E731
    body = (e("Result-Code", 2001) + e("Origin-Host", "ocs") + e("Origin-Realm", "example.net")
            + e("Host-IP-Address", "192.0.2.1") + e("Vendor-Id", 0) + e("Product-Name", "x")
            + raw_avp(258, b"\0\0\4"))
    cli.receive_data(frame(257, 0x00, 0, body, 12345, cer.end_to_end), 0.1)
    assert cli.state is PeerState.WAIT_I_CEA                    # unknown Hop-by-Hop: ignored
    cli.receive_data(frame(257, 0x00, 0, body, cer.hop_by_hop, cer.end_to_end), 0.2)
    assert cli.state is PeerState.CLOSED


def test_deeply_nested_grouped_is_refused(dictionary):
    inner = raw_avp(264, b"x")
    for _ in range(2000):                       # Failed-AVP inside Failed-AVP ...
        inner = raw_avp(279, inner)
    p = opened(dictionary)
    p.receive_data(frame(280, 0x80, 0, enc(dictionary, "Origin-Host", "pgw.example.net")
                         + enc(dictionary, "Origin-Realm", "example.net") + inner), 2.0)
    [dwa] = answers(p, dictionary)
    assert dwa.get("Result-Code") == 5004 and p.state is PeerState.R_OPEN


@pytest.mark.parametrize("flag", [0x20, 0x40])
def test_cer_with_e_or_p_bit_3008(dictionary, flag):
    raw = bytearray(sample("CER"))
    raw[4] |= flag
    p = server(dictionary)
    p.receive_data(bytes(raw), 1.0)
    [cea] = answers(p, dictionary)
    assert cea.get("Result-Code") == 3008 and cea.is_error and not cea.flags & 0x40


@pytest.mark.parametrize("apps,code", [([], 5005), ([("Auth-Application-Id", 4), ("Acct-Application-Id", 3)], 5009)])
def test_vendor_specific_application_id_needs_exactly_one(dictionary, apps, code):
    cer = request(dictionary, "Capabilities-Exchange-Request", [
        ("Origin-Host", "pgw.example.net"), ("Origin-Realm", "example.net"), ("Host-IP-Address", "192.0.2.1"),
        ("Vendor-Id", 0), ("Product-Name", "x"), ("Auth-Application-Id", 4),
        ("Vendor-Specific-Application-Id", [("Vendor-Id", 10415)] + apps)], hop_by_hop=1, end_to_end=2)
    p = server(dictionary)
    p.receive_data(cer.encode(), 1.0)
    [cea] = answers(p, dictionary)
    assert cea.get("Result-Code") == code and p.state is PeerState.CLOSED


def test_failed_avp_keeps_vendor_of_a_bad_length(dictionary):
    body = ccr_body(dictionary) + raw_avp(1000, b"", vendor=10415, length=400)[:12]
    p = opened(dictionary)
    p.receive_data(frame(272, 0xC0, 4, body), 2.0)
    [ans] = answers(p, dictionary)
    [failed] = ans.find("Failed-AVP").value
    assert (ans.get("Result-Code"), failed.code, failed.vendor, failed.flags & 0x80) == (5014, 1000, 10415, 0x80)


def test_reused_hop_by_hop_does_not_mix_answers(dictionary):
    p = opened(dictionary)
    p.receive_data(ccr(dictionary, e2e=100).encode(), 2.0)
    p.receive_data(ccr(dictionary, e2e=200).encode(), 2.0)         # same Hop-by-Hop 9
    a, b = [e.message for e in events(p)]
    for req in (b, a):
        p.send_answer(req.answer(2001).extend([("Origin-Host", "ocs"), ("Origin-Realm", "example.net")]))
    p.data_to_send()
    for e2e in (200, 100):
        again = ccr(dictionary, e2e=e2e)
        again.flags |= FLAG_T
        p.receive_data(again.encode(), 3.0)
        [ans] = answers(p, dictionary)
        assert ans.end_to_end == e2e


def test_end_to_end_ids_unique_across_connections_of_a_node(dictionary):
    from ocs.diameter.duplicates import EndToEndIds
    ids = EndToEndIds(1_795_000_000, random.Random(5))
    conns = [PeerConnection(CLIENT, dictionary, initiator=True, now=0.0, rng=random.Random(7),
                            end_to_end_ids=ids) for _ in range(2)]
    seen = [decode_message(c.data_to_send(), dictionary)[0].end_to_end for c in conns]
    assert len(set(seen)) == 2
    assert all(e >> 20 == 1_795_000_000 & 0xFFF for e in seen)     # high 12 bits: wall-clock seconds


def test_end_to_end_ids_of_workers_never_meet():
    """`ocs serve --workers 3`: each worker's ids carry its index in the counter's top
    bits, so a whole counter cycle of one never gives an id another gives (same second)."""
    import pytest
    from ocs.diameter.duplicates import EndToEndIds
    seen = []
    for w in range(3):
        ids = EndToEndIds(1_795_000_000, random.Random(w), 0.0, worker=(w, 3))
        mine = {ids.next(0.5) for _ in range(1 << 18)}      # a full cycle: 2^20 / 4 ids
        assert len(mine) == 1 << 18
        assert all(e >> 20 == 1_795_000_000 & 0xFFF and (e >> 18) & 3 == w for e in mine)
        seen.append(mine)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    with pytest.raises(ValueError):
        EndToEndIds(0, random.Random(1), worker=(3, 3))

def test_forgotten_request_answer_is_discarded(dictionary):
    cli = PeerConnection(CLIENT, dictionary, initiator=True, now=0.0, rng=random.Random(2))
    srv = server(dictionary)
    srv.receive_data(cli.data_to_send(), 0.1)
    cli.receive_data(srv.data_to_send(), 0.2)
    events(cli), events(srv)
    hbh = cli.send_request(ccr(dictionary))
    srv.receive_data(cli.data_to_send(), 0.3)
    [req] = events(srv)
    cli.forget_request(hbh)                                    # the caller timed out
    srv.send_answer(req.message.answer(2001).extend([("Origin-Host", "ocs"), ("Origin-Realm", "example.net")]))
    cli.receive_data(srv.data_to_send(), 0.4)
    assert events(cli) == []


@given(st.sampled_from(["CCR-I", "CCR-U", "CCR-T", "DWR", "DPR"]), st.data())
def test_open_peer_survives_mutated_requests(dictionary, name, data):
    raw = bytearray(sample(name))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(20, len(raw) - 1))] = data.draw(st.integers(0, 255))
    p = opened(dictionary)
    p.receive_data(bytes(raw), 2.0)
    evs = events(p)
    assert not any("unexpected decode failure" in getattr(e, "reason", "") for e in evs)
    answers(p, dictionary)


# ---- branches an earlier coverage run showed untested ---------------------------

def client_and_cer(dictionary):
    cli = PeerConnection(CLIENT, dictionary, initiator=True, now=0.0, rng=random.Random(2))
    [cer] = answers(cli, dictionary)
    return cli, cer


def cea_for(cer, code, apps=(4,)):
    cea = cer.answer(code).extend([("Origin-Host", "ocs"), ("Origin-Realm", "example.net"),
                                   ("Host-IP-Address", "192.0.2.9"), ("Vendor-Id", 0), ("Product-Name", "x")]
                                  + [("Auth-Application-Id", a) for a in apps])
    return cea.encode()


@pytest.mark.parametrize("make,reason", [
    (lambda cer: cea_for(cer, 5010), "CEA with Result-Code 5010"),
    (lambda cer: cea_for(cer, 2001, apps=(16777238,)), "no common application in the CEA"),
    (lambda cer: sample("DWR"), "expected a CEA"),
])
def test_initiator_refuses_bad_cea(dictionary, make, reason):
    cli, cer = client_and_cer(dictionary)
    cli.receive_data(make(cer), 0.1)
    assert cli.state is PeerState.CLOSED
    assert events(cli)[-1] == ConnectionClosed(reason)


def test_request_and_disconnect_outside_open(dictionary):
    cli, _ = client_and_cer(dictionary)
    with pytest.raises(RuntimeError):
        cli.send_request(ccr(dictionary))
    cli.disconnect(0.5)                                    # not open yet: just closes
    assert cli.state is PeerState.CLOSED and events(cli) == [ConnectionClosed("disconnected locally")]


def test_second_cer_on_open_connection_5012(dictionary):
    p = opened(dictionary)
    p.receive_data(sample("CER"), 2.0)
    [cea] = answers(p, dictionary)
    assert cea.get("Result-Code") == 5012 and cea.get("Origin-Host") == "ocs.example.net"
    assert [a.value for a in cea.find_all("Host-IP-Address")] == [a for a in SERVER.host_ip_addresses]
    assert p.state is PeerState.R_OPEN


def test_same_ids_while_in_flight_5012(dictionary):
    p = opened(dictionary)
    p.receive_data(ccr(dictionary, e2e=100).encode(), 2.0)
    other = ccr(dictionary, e2e=100)
    other.avps[1] = other.avps[1].__class__(264, 0x40, 0, b"pgw2.example.net",
                                            dictionary.avp("Origin-Host"), dictionary)
    p.receive_data(other.encode(), 2.1)                    # same ids, other Origin-Host
    [ans] = answers(p, dictionary)
    assert ans.get("Result-Code") == 5012


def test_at_most_one_dwr_pending(dictionary):
    p = opened(dictionary, tw=6.0)
    p.handle_timer(p.get_timer())                          # DWR 1
    [first] = answers(p, dictionary)
    p.receive_data(sample("DWR"), p.get_timer() - 1)       # traffic keeps the link OKAY...
    p.data_to_send()
    p.handle_timer(p.get_timer())                          # ...but DWR 1 is still pending: SUSPECT
    assert p.data_to_send() == b"" and p.watchdog_state == "SUSPECT"
    assert [h for h, is_app in p._pending.items() if not is_app] == [first.hop_by_hop]


def test_close_mid_request_lets_the_retransmission_through(dictionary):
    cache = DuplicateCache()
    p = opened(dictionary, duplicates=cache)
    p.receive_data(ccr(dictionary).encode(), 2.0)
    assert isinstance(events(p)[0], RequestReceived)
    p.receive_data(b"", 2.5)                               # the link drops before we answer
    q = opened(dictionary, duplicates=cache)
    again = ccr(dictionary)
    again.flags |= FLAG_T
    q.receive_data(again.encode(), 3.0)                    # failover: must be handled, not dropped
    assert [type(e) for e in events(q)] == [RequestReceived]
