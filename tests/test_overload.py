"""Overload protection (issue 5, RFC 6733 §7.1.3): past `[charging] max_pending` CCRs
waiting for their group commit, a worker answers 3004 DIAMETER_TOO_BUSY at once with
the E bit, and charges nothing for it. The node in process on loopback, a burst of
CCR-EVENTs written to the socket in one go by a python-diameter peer."""

from diameter.message import Message as PdMessage
from diameter.message.avp.grouped import RequestedServiceUnit

from charging_peer import DIRECT_DEBITING, EVENT, MSISDN, PGW_A, SMS, ccr
from test_reauth import Gateway, NodeThread


def burst(node, n: int) -> list:
    """n SMS direct debits for alice sent in one write; the answers, in arrival order."""
    with Gateway(node.port, PGW_A) as pgw:
        frames, ids = [], []
        for i in range(n):
            m = ccr(f"{PGW_A};burst;{i}", EVENT, 0, context=SMS, msisdn=MSISDN["alice"],
                    requested_action=DIRECT_DEBITING,
                    rsu=RequestedServiceUnit(cc_service_specific_units=1))
            frames.append(m.as_bytes())
            ids.append(m.header.hop_by_hop_identifier)
        pgw.sock.sendall(b"".join(frames))
        answers = [PdMessage.from_bytes(pgw.recv_frame()) for _ in range(n)]
    assert sorted(a.header.hop_by_hop_identifier for a in answers) == sorted(ids)  # each answered
    return answers


def test_a_burst_past_the_bound_gets_3004_and_is_not_charged(tmp_path):
    node = NodeThread(tmp_path, max_pending=1)
    try:
        before = node.main_bucket("alice")[0]
        answers = burst(node, 20)
        ok = [a for a in answers if a.result_code == 2001]
        busy = [a for a in answers if a.result_code == 3004]
        assert len(ok) + len(busy) == 20 and ok and busy
        for a in busy:
            assert a.header.is_error                      # a protocol error: E bit set
            assert a.origin_host == b"ocs.example.net"
        price = (before - node.main_bucket("alice")[0]) // len(ok)
        assert price > 0 and node.main_bucket("alice")[0] == before - price * len(ok)
    finally:
        node.close()


def test_under_the_bound_nothing_is_refused(tmp_path):
    node = NodeThread(tmp_path)                            # the default bound, 10,000
    try:
        assert all(a.result_code == 2001 for a in burst(node, 20))
    finally:
        node.close()

