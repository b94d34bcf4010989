"""Speculative execution (ocs/store/speculate.py): a CCR decided on a snapshot outside the
write lock and applied after checking its reads must leave the store exactly as deciding
it inside the lock would, including when another request of the same batch (or another
worker) changed what it read. Real LMDB in a temp dir, the real ledger."""

from __future__ import annotations

import copy
import random

import pytest

from ocs.charging import provision as prov
from ocs.charging.ledger import Ledger
from ocs.charging.quota import EngineConfig
from ocs.charging.requests import CreditRequest, RequestedAction, RequestType, ServiceRequest
from ocs.charging.units import UnitType
from ocs.store.base import DATABASES
from ocs.store.lmdb import LmdbStore
from ocs.store.speculate import APPLIED, CONFLICT, UNSUPPORTED, speculate

PLAN = {"id": "p", "currency": "EUR", "tariffs": [
    {"context": "ctx", "unit": "total_octets", "price": 1, "per": 1000, "default_quota": 10000,
     "validity_time": 60}]}
ACCOUNTS = [{"id": f"a{i}", "plan": "p", "identities": [f"e164:{i}"],
             "buckets": [{"id": "main", "amount": 5000}]} for i in range(3)]


def new_store(path) -> LmdbStore:
    st = LmdbStore(str(path), map_size=1 << 26, durability="os")
    st.write(lambda t: t.put("meta", b"store_id", b"test"))    # the same event ids in both
    st.write(lambda t: prov.load_data(t, {"plans": [PLAN], "accounts": ACCOUNTS}, 0))
    return st


def dump(store) -> dict:
    with store.read() as t:
        return {db: list(t.items(db)) for db in DATABASES}


def render(d) -> bytes:
    return repr((int(d.result_code), [(r.rating_group, int(r.result_code), r.granted)
                                      for r in d.services])).encode()


def workload(seed: int, n: int) -> list:
    """CCRs over a few sessions and accounts: updates, terminations, events, duplicates
    and requests out of order, so that batches conflict on balances and sessions."""
    rng = random.Random(seed)
    state: dict = {}
    out = []
    for i in range(n):
        sid = f"s{rng.randrange(6)}"
        acct = int(sid[1:]) % 3
        number = state.get(sid)
        if rng.random() < 0.1:
            out.append(CreditRequest(f"e{i}", RequestType.EVENT, 0, "ctx", [f"e164:{acct}"],
                                     action=RequestedAction.DIRECT_DEBITING,
                                     services=[ServiceRequest(1, None, {UnitType.TOTAL_OCTETS: 500})]))
            continue
        if number is None:
            req = CreditRequest(sid, RequestType.INITIAL, 0, "ctx", [f"e164:{acct}"],
                                services=[ServiceRequest(1, None, {})])
            state[sid] = 0
        elif rng.random() < 0.15:                       # a duplicate or an old number
            req = CreditRequest(sid, RequestType.UPDATE, max(0, number - rng.randrange(2)), "ctx",
                                services=[ServiceRequest(1, None, {}, {UnitType.TOTAL_OCTETS: 700})])
        elif rng.random() < 0.25:
            req = CreditRequest(sid, RequestType.TERMINATION, number + 1, "ctx", services=[
                ServiceRequest(1, None, None, {UnitType.TOTAL_OCTETS: rng.randrange(3000)})])
            del state[sid]
        else:
            req = CreditRequest(sid, RequestType.UPDATE, number + 1, "ctx", services=[
                ServiceRequest(1, None, {}, {UnitType.TOTAL_OCTETS: rng.randrange(9000)})])
            state[sid] = number + 1
        out.append(req)
    return out


def both_ways(ledger, direct, spec, batch: list, now: int, outcomes: list) -> tuple:
    """One batch of CCRs run directly on `direct` and, on `spec`, speculated on one
    snapshot taken before the batch (as a worker does) then applied; the completions
    of both. The direct side has its own copies of the requests, taken before the
    speculation runs: a speculation must not change the request it may decide again."""
    def fns(reqs):
        return [(lambda t, r=r: ledger.credit_control(t, r, now, render)) for r in reqs]
    own = copy.deepcopy(batch)
    snap = spec.snapshot()
    try:
        applied = [speculate(snap, fn, outcomes.append) for fn in fns(batch)]
    finally:
        spec.end_snapshot(snap)
    return (direct.run_here([(fn, None) for fn in fns(own)]),
            spec.run_here([(fn, None) for fn in applied]))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_speculated_batches_leave_the_store_as_direct_ones(tmp_path, seed):
    ledger = Ledger(EngineConfig())
    direct, spec = new_store(tmp_path / "direct"), new_store(tmp_path / "spec")
    outcomes: list = []
    try:
        reqs = workload(seed, 300)
        rng = random.Random(seed)
        i, now = 0, 1000
        while i < len(reqs):
            batch = reqs[i:i + rng.randrange(1, 12)]
            i += len(batch)
            now += 1
            a, b = both_ways(ledger, direct, spec, batch, now, outcomes)
            assert [(r[0], e) for _, r, e in a] == [(r[0], e) for _, r, e in b]
        assert dump(direct) == dump(spec)
    finally:
        direct.close()
        spec.close()
    # both paths were taken: most applied, the conflicting ones decided again
    assert outcomes.count(APPLIED) > 100 and outcomes.count(CONFLICT) > 5


def test_a_change_by_another_writer_is_seen(tmp_path):
    """Another worker's commit between the speculation and the batch: the reads no
    longer match, and the CCR is decided again on the new balance."""
    ledger = Ledger(EngineConfig())
    st = new_store(tmp_path / "s")
    outcomes: list = []
    try:
        req = CreditRequest("x", RequestType.EVENT, 0, "ctx", ["e164:0"],
                            action=RequestedAction.DIRECT_DEBITING, services=[ServiceRequest(1, None, {UnitType.TOTAL_OCTETS: 1000})])
        fn = lambda t: ledger.credit_control(t, req, 10, render)  # noqa: E731
        snap = st.snapshot()
        try:
            applied = speculate(snap, fn, outcomes.append)
        finally:
            st.end_snapshot(snap)
        st.write(lambda t: prov.set_status(t, "a0", "suspended"))   # meanwhile, elsewhere
        [(_, (answer, decision), exc)] = st.run_here([(applied, None)])
        assert exc is None and outcomes == [CONFLICT]
        assert decision.result_code == 4010 and answer.startswith(b"(4010")
    finally:
        st.close()


def test_unsupported_operations_fall_back(tmp_path):
    st = new_store(tmp_path / "s")
    outcomes: list = []
    try:
        def scan(t):
            return sum(1 for _ in t.items("accounts"))
        snap = st.snapshot()
        try:
            assert speculate(snap, scan, outcomes.append) is scan
        finally:
            st.end_snapshot(snap)
        assert outcomes == [UNSUPPORTED] and st.write(scan) == 3
    finally:
        st.close()


def test_a_restricted_re_ask_decided_again_gets_what_direct_gives(tmp_path):
    """Found in review: the speculation turned R2's absent RSU into {} on the caller's
    request, so after the conflict R2 was decided again as if it asked for units and
    got a grant that direct execution does not give. R1 (same batch) re-grants after a
    top-up and lifts the restriction; R2 is the restricted re-ask, no RSU, no USU."""
    plan = dict(PLAN, tariffs=[dict(PLAN["tariffs"][0], final_unit={
        "action": "restrict_access", "filter_ids": ["f"]})])
    ledger = Ledger(EngineConfig())
    stores = []
    for name in ("direct", "spec"):
        st = LmdbStore(str(tmp_path / name), map_size=1 << 26, durability="os")
        st.write(lambda t: t.put("meta", b"store_id", b"test"))
        st.write(lambda t: prov.load_data(t, {"plans": [plan], "accounts": [
            {"id": "a0", "plan": "p", "identities": ["e164:0"],
             "buckets": [{"id": "main", "amount": 5}]}]}, 0))
        st.write(lambda t: ledger.credit_control(t, CreditRequest(
            "s", RequestType.INITIAL, 0, "ctx", ["e164:0"],
            services=[ServiceRequest(1, None, {})]), 100, render))
        st.write(lambda t: prov.top_up(t, "a0", 100000, 101))
        stores.append(st)
    direct, spec = stores
    try:
        batch = [CreditRequest("s", RequestType.UPDATE, 1, "ctx", services=[
                     ServiceRequest(1, None, {}, {UnitType.TOTAL_OCTETS: 10})]),
                 CreditRequest("s", RequestType.UPDATE, 2, "ctx", services=[
                     ServiceRequest(1, None, None, {})])]
        outcomes: list = []
        a, b = both_ways(ledger, direct, spec, batch, 110, outcomes)
        assert outcomes == [APPLIED, CONFLICT]
        assert [r[0] for _, r, _ in a] == [r[0] for _, r, _ in b]
        assert dump(direct) == dump(spec)
    finally:
        direct.close()
        spec.close()
