"""The ledger against LMDB in a temp dir: CC-level duplicates, request order,
answer retention and the Tcc sweeper, with exact balances."""

import pytest

from ocs.charging import provision as prov
from ocs.charging.ledger import Ledger
from ocs.charging.quota import EngineConfig
from ocs.charging.records import decode_balance, decode_event
from ocs.charging.requests import CreditRequest, RequestType, ServiceRequest
from ocs.charging.units import UnitType
from ocs.store.lmdb import LmdbStore

PLAN = {"id": "p", "currency": "EUR", "tariffs": [
    {"context": "ctx", "unit": "total_octets", "price": 1, "per": 1000, "default_quota": 10000,
     "validity_time": 60}]}
WHO = "e164:1"


@pytest.fixture
def store(tmp_path):
    with LmdbStore(str(tmp_path / "s")) as st:
        st.write(lambda t: prov.load_data(t, {"plans": [PLAN], "accounts": [
            {"id": "a", "plan": "p", "identities": [WHO], "buckets": [{"id": "main", "amount": 1000}]}]}, 0))
        yield st


def ccr(kind, number, *services, sid="s1"):
    return CreditRequest(sid, kind, number, "ctx", [WHO] if kind == RequestType.INITIAL else [],
                         services=list(services))


def svc(rg, rsu=None, used=None):
    return ServiceRequest(rg, None, rsu, {} if used is None else {UnitType.TOTAL_OCTETS: used})


def run(store, ledger, req, now):
    def render(d):
        return repr((int(d.result_code), [(r.rating_group, int(r.result_code), r.granted)
                                          for r in d.services])).encode()
    return store.write(lambda t: ledger.credit_control(t, req, now, render))


def main(store):
    with store.read() as t:
        b = decode_balance(t.get("balances", b"a")).bucket("main")
        return b.amount, b.reserved


def events(store):
    with store.read() as t:
        return [decode_event(v) for _, v in t.items("outbox")]


def test_duplicates_and_out_of_order_updates(store):
    ledger = Ledger()
    run(store, ledger, ccr(RequestType.INITIAL, 0, svc(10, {}), svc(20, {})), 100)
    assert main(store) == (1000, 20)
    first, d = run(store, ledger, ccr(RequestType.UPDATE, 2, svc(20, {}, 3000)), 110)
    assert d is not None and main(store) == (997, 20)
    again, d2 = run(store, ledger, ccr(RequestType.UPDATE, 2, svc(20, {}, 3000)), 111)
    assert (again, d2) == (first, None) and main(store) == (997, 20)       # same answer, no debit
    _, d = run(store, ledger, ccr(RequestType.UPDATE, 1, svc(10, {}, 5000)), 112)  # out of order
    assert int(d.result_code) == 2001 and main(store) == (992, 20)
    _, d = run(store, ledger, ccr(RequestType.UPDATE, 2, svc(20, {}, 3000)), 113)  # late old copy
    assert int(d.result_code) == 5004 and main(store) == (992, 20)
    _, d = run(store, ledger, ccr(RequestType.TERMINATION, 3, svc(10, None, 0)), 120)
    assert int(d.result_code) == 2001 and main(store) == (992, 0)
    last, d = run(store, ledger, ccr(RequestType.TERMINATION, 3, svc(10, None, 0)), 121)
    assert d is None                                    # the CCR-T answer is kept for duplicates
    assert [e["amount"] for e in events(store) if e["type"] == "usage"] == [3, 5]
    _, d = run(store, ledger, ccr(RequestType.INITIAL, 0, svc(10, {})), 122)
    assert int(d.result_code) == 5004                   # a finished session's id is not reused
    # answer retention: gone after answer_retention, then the id is unknown (5002)
    with store.read() as t:
        assert t.get("answers", b"s1") is not None
    store.write(lambda t: ledger.expire(t, 121 + ledger.answer_retention, 100))
    with store.read() as t:
        assert t.get("answers", b"s1") is None
    _, d = run(store, ledger, ccr(RequestType.UPDATE, 4, svc(10, {}, 1)), 400)
    assert int(d.result_code) == 5002


def test_sweeper_releases_abandoned_sessions_at_tcc(store):
    ledger = Ledger(EngineConfig(validity_time=600, tcc_factor=2))
    run(store, ledger, ccr(RequestType.INITIAL, 0, svc(10, {})), 1000)
    run(store, ledger, ccr(RequestType.UPDATE, 1, svc(10, {}, 4000), sid="s1"), 1010)
    assert main(store) == (996, 10)
    # Tcc = 2 x Validity-Time 60 (the tariff's) from the last request
    assert store.write(lambda t: ledger.expire(t, 1010 + 119, 100)) == 0
    assert main(store) == (996, 10)
    assert store.write(lambda t: ledger.expire(t, 1010 + 120, 100)) == 1
    assert main(store) == (996, 0)
    expired = [e for e in events(store) if e["type"] == "session_expired"]
    assert len(expired) == 1 and expired[0]["released"] == [["main", 10]]
    assert expired[0]["used"] == {"10/": 4000} and expired[0]["charged"] == 4
    _, d = run(store, ledger, ccr(RequestType.UPDATE, 2, svc(10, {}, 1)), 1200)
    assert int(d.result_code) == 5002                   # the session is gone
    assert main(store) == (996, 0)


def test_event_ids_are_unique_and_ordered(store):
    ledger = Ledger()
    for i in range(5):
        run(store, ledger, ccr(RequestType.INITIAL, 0, svc(10, {}), sid=f"x{i}"), 100)
        run(store, ledger, ccr(RequestType.TERMINATION, 1, svc(10, None, 1000), sid=f"x{i}"), 101)
    ids = [e["event_id"] for e in events(store)]
    assert len(ids) == len(set(ids)) == 6               # initial balance + 5 usages
    seqs = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert seqs == sorted(seqs)
