"""The EM gateway on SQLite and on a real PostgreSQL: bulk load, change following, restart
resume, top-up idempotence, `--check`, refusals. A real LMDB cache in a temp dir."""

import io
import threading
import time

import pytest

from ocs import cli
from ocs.charging import balance as bal
from ocs.charging.provision import set_status
from ocs.charging.records import decode_account, decode_balance, decode_event, decode_plan
from ocs.gateways import bulk
from ocs.gateways import em_apply as ap
from ocs.gateways.em import Gateway
from ocs.gateways.em_check import check
from ocs.gateways.master import connect
from ocs.store.lmdb import LmdbStore

NOW = 1_700_000_000
PLAN = {"id": "mobile", "currency": "EUR", "tax": {"name": "VAT", "rate_bp": 2500},
        "tariffs": [{"context": "32251@3gpp.org", "unit": "total_octets", "price": 10,
                     "per": 1000000, "default_quota": 1000000}]}


@pytest.fixture
def store(tmp_path):
    s = LmdbStore(str(tmp_path / "cache"), map_size=1 << 28, durability="os")
    yield s
    s.close()


def populate(m, n=12):
    m.put_plan(PLAN)
    m.put_customer("cust-1", "Alice Andersson", "alice@example.org", "Storgatan 1, Stockholm")
    for i in range(n):
        m.put_account(f"acct-{i:03d}", "mobile", "EUR", credit_limit=100 * i,
                      identities=(f"e164:4670{i:07d}", f"imsi:24001{i:010d}"),
                      customer_id="cust-1" if i == 0 else None)
        m.add_adjustment(f"t-{i}", f"acct-{i:03d}", 1000 + i)
    m.add_adjustment("t-0b", "acct-000", 250)
    m.add_adjustment("fix-0", "acct-000", -50, reason="adjustment")
    m.add_adjustment("data-1", "acct-001", 5_000_000, kind="total_octets", expires=NOW + 86400,
                     rating_groups=(10,))


def cache(store, aid):
    with store.read() as txn:
        raw = txn.get("accounts", aid.encode())
        if raw is None:
            return None, None
        return decode_account(raw), decode_balance(txn.get("balances", aid.encode()))


def money(store, aid):
    return bal.summary(cache(store, aid)[1], NOW).get("money", 0)


def events(store):
    with store.read() as txn:
        return [decode_event(v) for _, v in txn.items("outbox")]


def test_bulk_load_then_follow_changes(master, store, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH", 5)          # several cache transactions
    populate(master)
    out = io.StringIO()
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start(progress=out)
    assert "loaded 12 accounts, 24 identities, 1 plans, 15 top-ups/adjustments" in out.getvalue()
    assert "100%" in out.getvalue()
    assert gw.cursor == master.changes_after(0, 1000)[-1][0]
    account, balance = cache(store, "acct-000")
    assert account.identities == ("e164:46700000000", "imsi:240010000000000")
    assert bal.summary(balance, NOW) == {"money": 1000 + 250 - 50}
    assert bal.summary(cache(store, "acct-001")[1], NOW) == {"money": 1001, "total_octets": 5_000_000}
    assert cache(store, "acct-011")[0].credit_limit == 1100
    with store.read() as txn:
        assert txn.get("identities", b"imsi:240010000000011") == b"acct-011"
        assert decode_plan(txn.get("plans", b"mobile")).tariffs[0].price == 10
    assert events(store) == []                     # the master's state: nothing to bill back
    assert check(store, master, io.StringIO()) == 0

    # changes: status, identities moved, a new account, a plan change, top-ups
    master.set_status("acct-002", "suspended")
    master.put_account("acct-003", "mobile", "EUR", identities=("e164:46709999999",))
    master.put_account("acct-100", "mobile", "EUR", identities=("e164:46700000003",))
    master.put_plan({**PLAN, "tariffs": [{**PLAN["tariffs"][0], "price": 20}]})
    master.add_adjustment("t-100", "acct-100", 700)
    master.add_adjustment("t-3b", "acct-003", 30)
    assert gw.catch_up() == 6
    assert cache(store, "acct-002")[0].status == "suspended"
    assert cache(store, "acct-003")[0].identities == ("e164:46709999999",)
    with store.read() as txn:
        assert txn.get("identities", b"e164:46700000003") == b"acct-100"
        assert txn.get("identities", b"imsi:240010000000003") is None
        assert decode_plan(txn.get("plans", b"mobile")).tariffs[0].price == 20
    assert money(store, "acct-100") == 700 and money(store, "acct-003") == 1003 + 30
    ev = events(store)
    assert [(e["type"], e["adjustment"], e["amount"]) for e in ev] == [
        ("top_up", "t-100", -700), ("top_up", "t-3b", -30)]
    assert ev[1]["balance_after"] == {"money": 1033}
    assert check(store, master, io.StringIO()) == 0
    assert len(gw.latencies) == 6 and all(x >= 0 for x in gw.latencies)


def test_restart_resumes_and_top_ups_apply_once(master, store):
    populate(master, 3)
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start()
    master.add_adjustment("t-late", "acct-001", 99)
    gw.catch_up()
    cursor = gw.cursor
    # a restarted gateway resumes at the cursor kept in the cache
    master.add_adjustment("t-later", "acct-001", 1)
    gw2 = Gateway(store, master, clock=lambda: NOW)
    gw2.start()
    assert gw2.cursor == cursor
    assert gw2.catch_up() == 1
    assert money(store, "acct-001") == 1001 + 99 + 1
    # replaying the whole change log (a cursor lost or rewound) applies no top-up twice
    store.write(lambda txn: txn.put("meta", ap.CURSOR, b"0"))
    gw3 = Gateway(store, master, clock=lambda: NOW)
    gw3.start()
    gw3.catch_up()
    assert money(store, "acct-001") == 1101
    assert money(store, "acct-000") == 1200
    assert [e["adjustment"] for e in events(store)] == ["t-late", "t-later"]
    # the same top-up id sent to the master again is not a second top-up either
    assert master.add_adjustment("t-late", "acct-001", 99) is False
    assert gw3.catch_up() == 0 and money(store, "acct-001") == 1101


def test_engine_debits_survive_sync(master, store):
    """A top-up is a delta: money the engine took meanwhile stays taken."""
    populate(master, 2)
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start()

    def spend(txn):
        account, balance = decode_account(txn.get("accounts", b"acct-001")), None
        from ocs.charging.records import encode_balance
        balance = decode_balance(txn.get("balances", b"acct-001"))
        bal.debit_money(balance, 600, account.credit_limit, NOW)
        txn.put("balances", b"acct-001", encode_balance(balance))
    store.write(spend)
    master.add_adjustment("t-x", "acct-001", 100)
    master.put_account("acct-001", "mobile", "EUR", credit_limit=5,
                       identities=("e164:46700000001",))
    gw.catch_up()
    assert money(store, "acct-001") == 1001 - 600 + 100
    assert cache(store, "acct-001")[0].credit_limit == 5


def test_check_reports_differences_and_pending(master, store):
    populate(master, 3)
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start()
    store.write(lambda txn: set_status(txn, "acct-001", "closed"))
    store.write(lambda txn: txn.delete("identities", b"e164:46700000002"))
    out = io.StringIO()
    assert check(store, master, out) == 2
    text = out.getvalue()
    assert "account acct-001: status is 'closed' in the cache, 'active' in the master" in text
    assert "identity e164:46700000002: points to nothing in the cache, not acct-002" in text
    master.set_status("acct-001", "active")        # not applied yet: pending, not a difference
    out = io.StringIO()
    assert check(store, master, out) == 1
    assert "1 change(s) not yet applied" in out.getvalue()


def test_refuses_a_cache_it_did_not_load(master, master_url, store, tmp_path):
    populate(master, 2)
    store.write(lambda txn: txn.put("accounts", b"stray", b"{}"))
    with pytest.raises(ap.SyncError, match="not loaded from a master"):
        Gateway(store, master).start()
    other = connect(f"sqlite:{tmp_path / 'other.db'}")
    other.migrate()
    s2 = LmdbStore(str(tmp_path / "c2"), map_size=1 << 26, durability="os")
    try:
        Gateway(s2, master).start()
        with pytest.raises(ap.SyncError, match="another master"):
            Gateway(s2, other).start()
    finally:
        s2.close()
        other.close()


def test_follow_wakes_on_changes(master, store):
    """The follower applies a change made while it waits (NOTIFY on PostgreSQL, polling on
    SQLite); how fast is measured by tools/bench_em.py, not asserted here."""
    populate(master, 2)
    gw = Gateway(store, master, poll_interval=0.05)
    gw.start()
    t = threading.Thread(target=gw.follow)
    t.start()
    try:
        master.set_status("acct-001", "suspended")
        deadline = time.monotonic() + 10
        while cache(store, "acct-001")[0].status != "suspended":
            assert time.monotonic() < deadline, "change not applied within 10 s"
            time.sleep(0.01)
    finally:
        gw.stop.set()
        t.join(10)
    assert not t.is_alive()


def test_cli(master_url, tmp_path, capsys):
    store = str(tmp_path / "cli-cache")
    assert cli.main(["em-gateway", "--master", master_url, "--store", store, "--migrate"]) == 0
    assert "schema at version 1" in capsys.readouterr().out
    m = connect(master_url)
    populate(m, 4)
    m.close()
    assert cli.main(["em-gateway", "--master", master_url, "--store", store, "--once"]) == 0
    assert "loaded 4 accounts" in capsys.readouterr().err
    assert cli.main(["em-gateway", "--master", master_url, "--store", store, "--check"]) == 0
    assert "master and cache agree" in capsys.readouterr().out
    assert cli.main(["em-gateway", "--master", "mysql://x", "--store", store]) == 2
    assert "expected sqlite:PATH or postgresql://" in capsys.readouterr().err


def test_a_change_the_cache_cannot_take_is_set_aside_not_blocking(master, store):
    """Bad data that got into the master behind the API (here: raw SQL) is recorded as
    failed and reported by --check; the changes behind it still apply."""
    populate(master, 2)
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start()
    with master.transaction() as cur:
        cur.execute("INSERT INTO adjustments (id, account_id, reason, kind, amount, bucket, expires, "
                    "rating_groups, created_at) VALUES ('bad', 'acct-001', 'top_up', 'total_octets', "
                    "5, 'main', NULL, NULL, 0)")
        master._log(cur, "adjustment", "bad")
    master.set_status("acct-001", "suspended")
    master.add_adjustment("good", "acct-001", 10)
    assert gw.catch_up() == 3
    assert cache(store, "acct-001")[0].status == "suspended"
    assert money(store, "acct-001") == 1011
    out = io.StringIO()
    assert check(store, master, out) == 2       # the failure, and the adjustment not applied
    assert "adjustment:bad: could not be applied: adjustment bad: bucket main holds money" \
        in out.getvalue()


def test_master_refuses_adjustments_the_cache_could_not_apply(master):
    from ocs.gateways.master import MasterError
    populate(master, 2)
    for kwargs, text in [({"kind": "bogus"}, "neither money nor"),
                         ({"kind": "total_octets", "bucket": "main"}, "bucket main is the account's money"),
                         ({"kind": "total_octets", "expires": "soon"}, "expires must be seconds"),
                         ({"kind": "total_octets", "rating_groups": ("x",)}, "rating groups"),
                         ({"amount": 1 << 70}, r"within ±2\^62"),
                         ({"reason": "gift"}, "reason must be one of")]:
        with pytest.raises(MasterError, match=text):
            master.add_adjustment("x", "acct-000", **{"amount": 5, **kwargs})
    master.add_adjustment("d1", "acct-000", 5, kind="total_octets", bucket="data")
    with pytest.raises(MasterError, match="bucket data of acct-000 holds total_octets, not time"):
        master.add_adjustment("d2", "acct-000", 5, kind="time", bucket="data")


def test_retries_racing_with_one_reference_never_fail(master_url, master):
    populate(master, 2)
    results, barrier = [], threading.Barrier(4)

    def retry():
        m = connect(master_url)
        barrier.wait()
        try:
            results.append(m.add_adjustment("race-1", "acct-000", 77))
        except Exception as e:                    # noqa: BLE001 - asserted below
            results.append(e)
        m.close()
    threads = [threading.Thread(target=retry) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [False, False, False, True]


def test_check_finds_a_stray_identity_in_the_cache(master, store):
    populate(master, 2)
    Gateway(store, master, clock=lambda: NOW).start()
    store.write(lambda txn: txn.put("identities", b"e164:999", b"acct-001"))
    out = io.StringIO()
    assert check(store, master, out) == 1
    assert "identity e164:999: points to acct-001 in the cache, not in the master" in out.getvalue()


def test_follower_survives_a_lost_connection(master_url, master, store):
    """PostgreSQL: every connection of the gateway is killed (a restart or a network cut);
    it reconnects, listens again and applies the next change."""
    if not master_url.startswith("postgresql"):
        pytest.skip("SQLite has no server connection to lose")
    import psycopg
    populate(master, 2)
    gw = Gateway(store, connect(master_url), poll_interval=0.05)
    gw.start()
    t = threading.Thread(target=gw.follow)
    t.start()
    try:
        time.sleep(0.3)
        with psycopg.connect(master_url, autocommit=True) as admin:
            killed = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                                   ).fetchone()[0]
        assert killed >= 2                  # the gateway's master and LISTEN connections (+ ours)
        fresh = connect(master_url)
        fresh.set_status("acct-001", "suspended")
        fresh.close()
        deadline = time.monotonic() + 15
        while cache(store, "acct-001")[0].status != "suspended":
            assert t.is_alive() and time.monotonic() < deadline, "change not applied after reconnect"
            time.sleep(0.05)
    finally:
        gw.stop.set()
        t.join(10)


def test_a_cache_loaded_again_keeps_what_was_spent(master, store, tmp_path):
    """Recovery: the first cache charged online and offline usage, took a top-up and
    delivered its events to the master; a new, empty cache loaded from the master has the
    same balances (spent money stays spent) and will not rate the same usage record twice."""
    master.clock = lambda: NOW          # the master's and the cache's clocks agree
    from ocs.charging.ledger import Ledger
    from ocs.charging.offline import parse_record, rate_record
    from ocs.charging.requests import CreditRequest, RequestedAction, RequestType, ServiceRequest
    from ocs.charging.units import UnitType
    from ocs.gateways.brm import drain
    populate(master, 3)
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start()
    usage = CreditRequest("s1", RequestType.EVENT, 0, "32251@3gpp.org", ["e164:46700000001"],
                          action=RequestedAction.DIRECT_DEBITING, services=[ServiceRequest(
                              10, None, {UnitType.TOTAL_OCTETS: 3_000_000}, {})])
    d = store.write(lambda txn: Ledger().credit_control(txn, usage, NOW, lambda d: b""))[1]
    assert d.result_code == 2001
    record = parse_record({"identity": "e164:46700000002", "context": "32251@3gpp.org",
                           "rating_group": "10", "start": str(NOW), "end": str(NOW + 60),
                           "units": "4000000", "unit": "total_octets", "id": "cdr-1"})
    assert store.write(lambda txn: rate_record(txn, record, NOW))["status"] == "rated"
    master.clock = lambda: NOW + 1
    master.add_adjustment("t-after", "acct-000", 70)
    gw.catch_up()
    before = {a: bal.summary(cache(store, a)[1], NOW) for a in ("acct-000", "acct-001", "acct-002")}
    assert before["acct-001"] == {"money": 1001, "total_octets": 2_000_000}   # allowance used first
    assert before["acct-002"]["money"] == 1002 - 40
    assert drain(store, master, 100)[0] == 3
    fresh = LmdbStore(str(tmp_path / "fresh"), map_size=1 << 26, durability="os")
    try:
        out = io.StringIO()
        Gateway(fresh, master, clock=lambda: NOW).start(progress=out)
        assert "3 delivered rated events (balances rebuilt)" in out.getvalue()
        after = {a: bal.summary(cache(fresh, a)[1], NOW) for a in before}
        assert after == before
        assert fresh.write(lambda txn: rate_record(txn, record, NOW))["status"] == "already_rated"
        assert check(fresh, master, io.StringIO()) == 0
    finally:
        fresh.close()


def test_bad_ids_and_reserved_buckets_are_refused_and_one_bad_top_up_costs_nothing_else(
        master, store):
    from ocs.gateways.master import MasterError
    populate(master, 2)
    with pytest.raises(MasterError, match="account id must be a string of 1 to 200 octets"):
        master.put_account("x" * 600, "mobile")
    with pytest.raises(MasterError, match="identity must be"):
        master.put_account("acct-000", "mobile", identities=("e164:" + "1" * 300,))
    with pytest.raises(MasterError, match="adj- are the cache's"):
        master.add_adjustment("m1", "acct-000", 5, bucket="adj-data-1")
    # data behind the API: one broken top-up of acct-001; its account and the rest load
    with master.transaction() as cur:
        cur.execute("INSERT INTO adjustments (id, account_id, reason, kind, amount, bucket, expires, "
                    "rating_groups, created_at) VALUES ('bad', 'acct-001', 'top_up', 'total_octets', "
                    "5, 'main', NULL, NULL, 0)")
    Gateway(store, master, clock=lambda: NOW).start()
    assert money(store, "acct-001") == 1001
    out = io.StringIO()
    assert check(store, master, out) == 2
    assert "adjustment:bad: could not be applied" in out.getvalue()


def test_reload_remakes_the_cache_own_buckets_whole(master, store, tmp_path):
    """Buckets the old cache made itself come back with their kind and expiry, before the
    master's top-ups: a master top-up the old cache refused stays refused (no data turned
    into money), a money bucket debited by a backdated record stays money, and an
    allowance that had expired stays expired."""
    master.clock = lambda: NOW          # the master's and the cache's clocks agree
    from ocs.charging.offline import parse_record, rate_record
    from ocs.charging.provision import top_up
    from ocs.gateways.brm import drain
    populate(master, 3)
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start()
    # 1. a cache bucket X of data, then a master money top-up into X: refused in the cache
    store.write(lambda txn: top_up(txn, "acct-000", 1_000_000_000, NOW, kind="total_octets",
                                   bucket_id="X"))
    master.add_adjustment("pay-x", "acct-000", 500, bucket="X")
    gw.catch_up()
    # 2. a cache money bucket, partly spent by a record dated before it was made
    store.write(lambda txn: top_up(txn, "acct-001", 300, NOW, bucket_id="promo", expires=NOW + 10**6))
    record = parse_record({"identity": "e164:46700000001", "context": "32251@3gpp.org",
                           "rating_group": "7", "start": str(NOW - 86400), "end": str(NOW - 86000),
                           "units": "30000000", "unit": "total_octets", "id": "old-cdr"})
    assert store.write(lambda txn: rate_record(txn, record, NOW))["event"]["amount"] == 300
    # 3. an allowance that expires before the reload
    store.write(lambda txn: top_up(txn, "acct-002", 5_000_000, NOW, kind="total_octets",
                                   expires=NOW + 2))
    before = {a: bal.summary(cache(store, a)[1], NOW + 3) for a in ("acct-000", "acct-001", "acct-002")}
    assert before == {"acct-000": {"money": 1200, "total_octets": 1_000_000_000},
                      "acct-001": {"money": 1001, "total_octets": 5_000_000},
                      "acct-002": {"money": 1002}}
    drain(store, master, 100)
    fresh = LmdbStore(str(tmp_path / "fresh"), map_size=1 << 26, durability="os")
    try:
        Gateway(fresh, master, clock=lambda: NOW + 3).start()
        after = {a: bal.summary(cache(fresh, a)[1], NOW + 3) for a in before}
        assert after == before
        x = cache(fresh, "acct-000")[1].bucket("X")
        assert (x.kind, x.amount) == ("total_octets", 1_000_000_000)
        promo = cache(fresh, "acct-001")[1].bucket("promo")
        assert (promo.kind, promo.amount, promo.expires) == ("money", 0, NOW + 10**6)
        out = io.StringIO()
        assert check(fresh, master, out) == 2       # the refused top-up: failed, and not applied
        assert "adjustment:pay-x: could not be applied: adjustment pay-x: bucket X holds " \
               "total_octets in the cache, not money" in out.getvalue()
    finally:
        fresh.close()


def _debit(store, sid, ident, at, octets=1_000_000):
    from ocs.charging.ledger import Ledger
    from ocs.charging.requests import CreditRequest, RequestedAction, RequestType, ServiceRequest
    from ocs.charging.units import UnitType
    req = CreditRequest(sid, RequestType.EVENT, 0, "32251@3gpp.org", [ident],
                        action=RequestedAction.DIRECT_DEBITING,
                        services=[ServiceRequest(None, None, {UnitType.TOTAL_OCTETS: octets}, {})])
    assert store.write(lambda txn: Ledger().credit_control(txn, req, at, lambda d: b""))[1] \
        .result_code == 2001


def _same_after_reload(master, store, path, at, accounts):
    from ocs.gateways.brm import drain
    drain(store, master, 100)
    before = {a: bal.summary(cache(store, a)[1], at) for a in accounts}
    fresh = LmdbStore(path, map_size=1 << 26, durability="os")
    try:
        Gateway(fresh, master, clock=lambda: at).start()
        return before, {a: bal.summary(cache(fresh, a)[1], at) for a in accounts}
    finally:
        fresh.close()


def test_reload_replays_buckets_used_again_after_they_expired(master, store, tmp_path):
    """A bucket id used again after its bucket expired names the new bucket: a cache
    bucket named again (acct-001), a master bucket named again (acct-002), and a cache
    account's empty bucket that a later master top-up of another kind could not use."""
    master.clock = lambda: NOW          # the master's and the cache's clocks agree
    from ocs.charging.model import MONEY, Account, Bucket
    from ocs.charging.provision import create_account, top_up
    populate(master, 3)
    master.add_adjustment("b-1", "acct-002", 300, bucket="B", expires=NOW + 100)
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start()
    store.write(lambda txn: top_up(txn, "acct-001", 300, NOW, bucket_id="promo", expires=NOW + 100))
    _debit(store, "d1", "e164:46700000001", NOW + 10)            # 10 from promo
    _debit(store, "d2", "e164:46700000001", NOW + 200)           # promo expired: dropped
    _debit(store, "d3", "e164:46700000002", NOW + 200)           # B expired: dropped
    store.write(lambda txn: top_up(txn, "acct-001", 500, NOW + 300, bucket_id="promo",
                                   expires=NOW + 10**6))
    master.clock = lambda: NOW + 300
    master.add_adjustment("b-2", "acct-002", 500, bucket="B", expires=NOW + 10**6)
    acc = Account("acct-new", "mobile", "EUR", identities=("e164:46709999999",))
    store.write(lambda txn: create_account(txn, acc, [Bucket("main", MONEY, 200, 0, 1 << 30),
                                                      Bucket("promo", MONEY, 0, 0, 50)], NOW))
    master.put_account("acct-new", "mobile", "EUR", identities=("e164:46709999999",))
    master.add_adjustment("data-promo", "acct-new", 10**9, kind="total_octets", bucket="promo")
    gw.clock = lambda: NOW + 300
    gw.catch_up()
    accounts = ("acct-001", "acct-002", "acct-new")
    before, after = _same_after_reload(master, store, str(tmp_path / "fresh"), NOW + 400, accounts)
    assert before == {"acct-001": {"money": 991 + 500, "total_octets": 5_000_000},
                      "acct-002": {"money": 992 + 500},
                      "acct-new": {"money": 200}}
    assert after == before


def test_two_reloads_keep_an_allowance_under_a_bucket_id_used_twice(master, store, tmp_path):
    master.clock = lambda: NOW          # the master's and the cache's clocks agree
    from ocs.charging.provision import top_up
    from ocs.gateways.brm import drain
    populate(master, 2)
    Gateway(store, master, clock=lambda: NOW).start()
    store.write(lambda txn: top_up(txn, "acct-001", 5_000_000, NOW, kind="total_octets",
                                   expires=NOW + 100))
    drain(store, master, 100)
    second = LmdbStore(str(tmp_path / "second"), map_size=1 << 26, durability="os")
    try:
        Gateway(second, master, clock=lambda: NOW + 200).start()   # the allowance has expired
        second.write(lambda txn: top_up(txn, "acct-001", 7_000_000, NOW + 300, kind="total_octets",
                                        expires=NOW + 10**6))     # its id comes round again
        before, after = _same_after_reload(master, second, str(tmp_path / "third"), NOW + 400,
                                           ["acct-001"])
    finally:
        second.close()
    assert before == after == {"acct-001": {"money": 1001, "total_octets": 12_000_000}}


def test_top_ups_into_a_lapsed_bucket_make_a_new_one_in_the_cache_and_on_reload(
        master, store, tmp_path):
    """A master top-up into a named bucket that has expired (not yet dropped) makes a new
    bucket instead of vanishing into the dead one (acct-001); a top-up made while no gateway
    ran, after the cache's bucket of that name lapsed, is counted at the time it was made, in
    the old cache and in a reloaded one alike (acct-002, money; acct-000, another kind)."""
    from ocs.charging.provision import top_up
    from ocs.gateways.brm import drain
    master.clock = lambda: NOW
    populate(master, 3)
    master.add_adjustment("d-1", "acct-001", 5_000_000, kind="total_octets", bucket="D",
                          expires=NOW + 100)
    gw = Gateway(store, master, clock=lambda: NOW)
    gw.start()
    store.write(lambda txn: top_up(txn, "acct-002", 500, NOW, bucket_id="P", expires=NOW + 100))
    store.write(lambda txn: top_up(txn, "acct-000", 400, NOW, bucket_id="Q", expires=NOW + 100))
    _debit(store, "d1", "e164:46700000002", NOW + 10)             # 10 from P
    _debit(store, "d2", "e164:46700000002", NOW + 200)            # P lapsed: dropped
    _debit(store, "d3", "e164:46700000000", NOW + 200)            # Q lapsed: dropped
    master.clock = lambda: NOW + 200
    master.add_adjustment("d-2", "acct-001", 2_000_000, kind="total_octets", bucket="D",
                          expires=NOW + 10**6)
    gw.clock = lambda: NOW + 200
    gw.catch_up()
    d = cache(store, "acct-001")[1].bucket("D")         # (acct-001 also holds 5M in adj-data-1)
    assert (d.amount, d.expires) == (2_000_000, NOW + 10**6)
    drain(store, master, 100)
    # no gateway runs now; the master takes two more top-ups into the lapsed names
    master.clock = lambda: NOW + 250
    master.add_adjustment("p-late", "acct-002", 300, bucket="P")
    master.add_adjustment("q-late", "acct-000", 2_000_000, kind="total_octets", bucket="Q")
    fresh = LmdbStore(str(tmp_path / "fresh"), map_size=1 << 26, durability="os")
    try:
        Gateway(fresh, master, clock=lambda: NOW + 300).start()
        gw.clock = lambda: NOW + 300
        gw.catch_up()                                  # the old cache, for comparison
        accounts = ("acct-000", "acct-001", "acct-002")
        old = {a: bal.summary(cache(store, a)[1], NOW + 300) for a in accounts}
        assert old == {"acct-000": {"money": 1200 - 10, "total_octets": 2_000_000},
                       "acct-001": {"money": 1001, "total_octets": 5_000_000 + 2_000_000},
                       "acct-002": {"money": 992 + 300}}
        assert {a: bal.summary(cache(fresh, a)[1], NOW + 300) for a in accounts} == old
    finally:
        fresh.close()
