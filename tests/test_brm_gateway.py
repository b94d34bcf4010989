"""The BRM gateway on SQLite and PostgreSQL: rated events made by the real provisioning and
ledger in a real LMDB outbox, delivered in order and exactly once; snapshots; auto billing; CLI."""

import json
import os
import struct

import pytest

from ocs.charging import provision as prov
from ocs.charging.ledger import Ledger, append_events
from ocs.charging.records import decode_balance, decode_event, encode_event
from ocs.charging.requests import CreditRequest, RequestedAction, RequestType, ServiceRequest
from ocs.charging.units import UnitType
from ocs.cli import main
from ocs.gateways import billing, brm, brm_snapshot
from ocs.gateways.master import connect
from ocs.store.lmdb import LmdbStore

T0 = 1759276800 + 86400                       # 2025-10-02 00:00 UTC
DATA, SMS = "32251@3gpp.org", "32274@3gpp.org"
PLAN = {"id": "mobile", "currency": "EUR", "tariffs": [
    {"context": DATA, "rating_group": 10, "unit": "total_octets", "price": 2, "per": 1000,
     "default_quota": 100000, "validity_time": 600},
    {"context": SMS, "unit": "service_specific_units", "price": 9, "default_quota": 1}]}
COLUMNS = ("event_id, account_id, type, context, rating_group, service_id, start_at, end_at, amount, "
           "unpaid, currency, body")


@pytest.fixture
def store(tmp_path):
    with LmdbStore(str(tmp_path / "lmdb")) as st:
        yield st


def ccr(store, ledger, sid, kind, number, who, ctx, now, rsu=None, used=None, action=None, rg=10):
    unit = UnitType.TOTAL_OCTETS if ctx == DATA else UnitType.SERVICE_SPECIFIC_UNITS
    req = CreditRequest(sid, kind, number, ctx, [who], action=action, services=[
        ServiceRequest(rg, None, rsu, {} if used is None else {unit: used})])
    store.write(lambda t: ledger.credit_control(t, req, now, lambda d: b""))


def charge_some(store, accounts=3, now=T0):
    """Accounts with a starting balance, a top-up, a data session and an SMS: 5 events each."""
    ledger = Ledger()
    data = {"plans": [PLAN], "accounts": [
        {"id": f"acc-{i}", "plan": "mobile", "identities": [f"e164:467000{i}"],
         "buckets": [{"id": "main", "amount": 1000}]} for i in range(accounts)]}
    store.write(lambda t: prov.load_data(t, data, now))
    for i in range(accounts):
        who, sid = f"e164:467000{i}", f"pgw;{i}"
        store.write(lambda t: prov.top_up(t, f"acc-{i}", 250, now + 1))
        ccr(store, ledger, sid, RequestType.INITIAL, 0, who, DATA, now + 2, rsu={})
        ccr(store, ledger, sid, RequestType.UPDATE, 1, who, DATA, now + 60, rsu={}, used=1000 * (i + 1))
        ccr(store, ledger, sid, RequestType.TERMINATION, 2, who, DATA, now + 90, used=500)
        ccr(store, ledger, f"sms;{i}", RequestType.EVENT, 0, who, SMS, now + 100,
            rsu={UnitType.SERVICE_SPECIFIC_UNITS: 1}, action=RequestedAction.DIRECT_DEBITING, rg=None)


def outbox(store):
    with store.read() as t:
        return [(bytes(k), bytes(v)) for k, v in t.items("outbox")]


def rows(master):
    with master.transaction(snapshot=True) as cur:
        return {r[0]: tuple(r) for r in cur.all(f"SELECT {COLUMNS} FROM rated_events")}


def test_delivers_in_outbox_order_then_empties_it(store, master):
    charge_some(store)
    before = outbox(store)
    events = [decode_event(v) for _, v in before]
    assert {e["type"] for e in events} == {"initial_balance", "top_up", "usage", "direct_debit"}
    assert [struct.unpack(">Q", k)[0] for k, _ in before] == sorted(
        int(e["event_id"].rsplit("-", 1)[1]) for e in events)
    delivered = []
    while True:
        d, p = brm.deliver(store, master, 4)
        if d + p == 0:
            break
        assert p == 0
        delivered += [e["event_id"] for e in events[len(delivered):len(delivered) + d]]
        assert set(rows(master)) == set(delivered)       # always a prefix of the outbox, in order
        assert [v for _, v in outbox(store)] == [v for _, v in before[len(delivered):]]
    assert len(delivered) == len(events) == 15 and outbox(store) == []
    got = rows(master)
    for (_, raw), e in zip(before, events):
        assert got[e["event_id"]] == (e["event_id"], e["account"], e["type"], e["context"],
                                      e["rating_group"], e["service_id"], e["start"], e["end"],
                                      e["amount"], e["unpaid"], e["currency"], raw.decode())
    usage = sorted(r[8] for r in got.values() if r[2] == "usage")
    assert usage == [1, 1, 1, 2, 4, 6]               # 500 octets = 1 cent; 1000 * (i+1) at 2/1000


def test_redelivery_after_a_crash_before_the_outbox_delete_inserts_nothing(store, master):
    charge_some(store, accounts=2)
    before = outbox(store)
    assert brm.deliver(store, master, 1000) == (len(before), 0)
    first = rows(master)
    with master.transaction(snapshot=True) as cur:
        loaded = dict(cur.all("SELECT event_id, loaded_at FROM rated_events"))

    def put_back(t):       # as if the gateway died after the master commit, before the delete
        for k, v in before:
            t.put("outbox", k, v)
    store.write(put_back)
    assert brm.deliver(store, master, 5, now=loaded[next(iter(loaded))] + 999) == (0, 5)
    assert brm.drain(store, master, 5) == (0, len(before) - 5)
    assert outbox(store) == [] and rows(master) == first
    with master.transaction(snapshot=True) as cur:
        assert dict(cur.all("SELECT event_id, loaded_at FROM rated_events")) == loaded


def test_a_broken_event_stops_delivery_and_stays_in_the_outbox(store, master):
    charge_some(store, accounts=1)
    good = outbox(store)
    bad = struct.pack(">Q", 10**6)
    store.write(lambda t: t.put("outbox", bad, encode_event({"type": "usage", "event_id": "x-1"})))
    assert brm.deliver(store, master, len(good)) == (len(good), 0)
    with pytest.raises(brm.DeliveryError, match="outbox entry 1000000"):
        brm.deliver(store, master, 10)
    assert [k for k, _ in outbox(store)] == [bad] and len(rows(master)) == len(good)


def test_snapshot_writes_every_balance(store, master):
    charge_some(store)
    with store.read() as t:
        balances = {k.decode(): decode_balance(v) for k, v in t.items("balances")}
    assert brm.take_snapshot(store, master, T0 + 500, chunk=2) == 3
    assert brm.take_snapshot(store, master, T0 + 500) == 3           # same second: kept once
    with master.transaction(snapshot=True) as cur:
        snap = {a: (t, json.loads(b)) for a, t, b in cur.all(
            "SELECT account_id, taken_at, body FROM balance_snapshots")}
        assert cur.one("SELECT value FROM master_meta WHERE key = ?", (brm.SNAPSHOT_AT,))[0] == str(T0 + 500)
    assert sorted(snap) == sorted(balances)
    for acc, (taken, body) in snap.items():
        main_bucket = balances[acc].bucket("main")
        assert taken == T0 + 500 and body["summary"] == {"money": main_bucket.amount}
        assert body["buckets"] == [["main", "money", main_bucket.amount, 0, 1 << 30, None, None]]
    assert snap["acc-0"][1]["summary"]["money"] == 1000 + 250 - 2 - 1 - 9


def test_auto_bill_waits_for_the_cycle_to_end_and_its_events(store, master, tmp_path):
    charge_some(store, accounts=2)                        # October 2025
    gw = brm.Gateway(store, master, batch=100, auto_bill=True, invoice_dir=str(tmp_path / "inv"))
    nov, dec = 1761955200, 1764547200
    assert brm.due_cycles(store, master, nov - 1) == []             # October has not ended
    assert brm.due_cycles(store, master, nov + 10) == []            # ended, events not delivered
    assert gw.step() == 10 and gw.step() == 0
    assert gw.bill_due(nov + 10) == ["2025-10"]
    assert gw.bill_due(nov + 20) == [] and brm.due_cycles(store, master, dec + 1) == ["2025-11"]
    charged = sum(r[8] for r in rows(master).values() if r[2] in ("usage", "direct_debit"))
    with master.transaction(snapshot=True) as cur:
        assert [tuple(r) for r in cur.all("SELECT cycle, invoices FROM bill_runs")] == [("2025-10", 2)]
        assert cur.one("SELECT sum(total) FROM invoices")[0] == charged == 2 + 1 + 9 + 4 + 1 + 9
    assert (tmp_path / "inv" / "2025-10" / "acc-1.html").exists()


def test_cli_once_and_snapshot(store, master, tmp_path, capsys):
    charge_some(store)
    n = len(outbox(store))
    path = store.path
    store.close()
    assert main(["brm-gateway", "--once", "--store", path, "--master", master.url]) == 0
    assert f"delivered {n} rated events (0 already present)" in capsys.readouterr().out
    assert main(["brm-gateway", "--snapshot", "--store", path, "--master", master.url]) == 0
    assert "snapshot of 3 balances" in capsys.readouterr().out
    with LmdbStore(path) as st:
        assert outbox(st) == []
    assert len(rows(master)) == n
    with master.transaction(snapshot=True) as cur:
        assert cur.one("SELECT count(*) FROM balance_snapshots")[0] == 3
    assert main(["brm-gateway", "--once", "--store", path, "--master",
                 f"sqlite:{tmp_path / 'unmigrated.db'}"]) == 2
    assert "schema version 0" in capsys.readouterr().err


def test_cli_refuses_a_store_that_is_not_a_folder_in_one_line(master, tmp_path, capsys):
    not_a_folder = tmp_path / "passwd"
    not_a_folder.write_text("root:x:0:0::/root:/bin/sh\n")
    assert main(["brm-gateway", "--once", "--store", str(not_a_folder), "--master", master.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ocs: cannot open the store at {not_a_folder}") and err.count("\n") == 1


def test_a_different_event_under_a_delivered_id_stops_delivery(store, master):
    """The outbox sequence went back (LMDB restored from a backup): new events reuse delivered
    ids. The conflict clause must not count them as already present and drop them."""
    charge_some(store, accounts=1)
    before = outbox(store)
    assert brm.deliver(store, master, 100) == (len(before), 0)
    delivered = rows(master)
    (k1, v1), (k2, v2) = before[1], before[2]
    other = decode_event(v2)
    other["amount"] += 7                                     # another event, same id
    same = json.dumps(json.loads(v1), indent=2).encode()     # the same event, other formatting
    store.write(lambda t: (t.put("outbox", k1, same), t.put("outbox", k2, encode_event(other))))
    new = {"type": "usage", "account": "acc-0", "context": DATA, "start": T0, "end": T0 + 9,
           "amount": 3, "unpaid": 0, "currency": "EUR", "units": {}}
    store.write(lambda t: append_events(t, [new], T0 + 9))
    waiting = outbox(store)
    new_id = decode_event(waiting[-1][1])["event_id"]
    with pytest.raises(brm.DeliveryError, match=f"event {other['event_id']} is already in the master "
                                                "with a different body"):
        brm.deliver(store, master, 100)
    assert outbox(store) == waiting and rows(master) == delivered      # the batch rolled back whole
    store.write(lambda t: t.delete("outbox", k2))                       # an operator looked
    assert brm.deliver(store, master, 100) == (1, 1)                    # same JSON: already present
    got = rows(master)
    assert set(got) == set(delivered) | {new_id} and got[other["event_id"]] == delivered[other["event_id"]]


def test_snapshot_writes_short_transactions_not_one_long_lock(store, master, monkeypatch):
    """While LMDB is read the master is free: another connection writes (SQLite: BEGIN
    IMMEDIATE would wait for the whole scan) and sees the chunks already written."""
    charge_some(store, accounts=5)
    other = connect(master.url)
    if other.dialect == "sqlite":
        other.conn.execute("PRAGMA busy_timeout = 200")
    seen, real = [], brm_snapshot.decode_balance

    def decode_and_write(raw):
        if len(seen) == 4:                             # the 5th balance: 2 chunks of 2 written
            other.put_customer("c-during-snapshot", "written while LMDB was read")
            with other.transaction(snapshot=True) as cur:
                seen.append(cur.one("SELECT count(*) FROM balance_snapshots")[0])
        seen.append(None)
        return real(raw)
    monkeypatch.setattr(brm_snapshot, "decode_balance", decode_and_write)
    try:
        assert brm.take_snapshot(store, master, T0 + 500, chunk=2) == 5
    finally:
        other.close()
    assert 4 in seen
    with master.transaction(snapshot=True) as cur:
        assert cur.one("SELECT count(*) FROM balance_snapshots WHERE taken_at = ?", (T0 + 500,))[0] == 5
        assert cur.one("SELECT 1 FROM customers WHERE id = 'c-during-snapshot'") is not None


def test_an_interrupted_snapshot_is_deleted_by_the_next_one(store, master, monkeypatch):
    charge_some(store, accounts=5)
    assert brm.take_snapshot(store, master, T0 + 100) == 5
    calls, real = [], brm_snapshot.decode_balance

    def die_midway(raw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(raw)
    monkeypatch.setattr(brm_snapshot, "decode_balance", die_midway)
    with pytest.raises(KeyboardInterrupt):
        brm.take_snapshot(store, master, T0 + 200, chunk=2)
    monkeypatch.setattr(brm_snapshot, "decode_balance", real)

    def snapshots():
        with master.transaction(snapshot=True) as cur:
            at = cur.one("SELECT value FROM master_meta WHERE key = ?", (brm.SNAPSHOT_AT,))[0]
            return at, dict(cur.all("SELECT taken_at, count(*) FROM balance_snapshots GROUP BY taken_at"))
    assert snapshots() == (str(T0 + 100), {T0 + 100: 5, T0 + 200: 2})   # 200: incomplete
    for _ in range(2):                                          # the same second again: idempotent
        assert brm.take_snapshot(store, master, T0 + 300, chunk=2) == 5
        assert snapshots() == (str(T0 + 300), {T0 + 100: 5, T0 + 300: 5})


def test_auto_bill_survives_an_unwritable_invoice_folder_and_finishes_later(store, master, tmp_path,
                                                                           caplog):
    charge_some(store, accounts=2)
    blocker = tmp_path / "inv"
    blocker.write_text("a file where the invoice folder should be")
    nov = 1761955200
    gw = brm.Gateway(store, master, batch=100, poll_interval=0.01, auto_bill=True,
                     invoice_dir=str(blocker), clock=lambda: nov + 10)
    real = gw.bill_due

    def once(now):
        try:
            return real(now)
        finally:
            gw.stop.set()
    gw.bill_due = once
    with caplog.at_level("WARNING", logger="ocs.brm"):
        gw.serve()                                            # logs, does not die
    assert "auto bill: " in caplog.text and "retrying in 60 s" in caplog.text
    assert outbox(store) == [] and len(rows(master)) == 10
    with master.transaction(snapshot=True) as cur:
        assert cur.all("SELECT cycle FROM bill_runs") == []         # nothing recorded
    assert brm.due_cycles(store, master, nov + 70) == ["2025-10"]
    blocker.unlink()
    assert real(nov + 70) == ["2025-10"] and (blocker / "2025-10" / "acc-0.html").exists()


def test_auto_bill_finishes_a_run_killed_before_its_files_were_in_place(store, master, tmp_path,
                                                                       monkeypatch):
    charge_some(store, accounts=2)
    nov, inv = 1761955200, tmp_path / "inv"
    gw = brm.Gateway(store, master, batch=100, auto_bill=True, invoice_dir=str(inv))
    gw.step()

    def killed(*args):
        raise KeyboardInterrupt("SIGKILL")
    monkeypatch.setattr(billing, "publish_cycle", killed)
    with pytest.raises(KeyboardInterrupt):
        gw.bill_due(nov + 10)
    monkeypatch.undo()
    with master.transaction(snapshot=True) as cur:
        (run_id, finished), = cur.all("SELECT id, finished_at FROM bill_runs")
    assert finished is None and not (inv / "2025-10").exists()
    assert brm.due_cycles(store, master, nov + 70) == ["2025-10"]
    assert gw.bill_due(nov + 70) == ["2025-10"] and (inv / "2025-10" / "acc-1.json").exists()
    assert json.loads((inv / "2025-10" / "acc-1.json").read_text())["bill_run_id"] == run_id
    with master.transaction(snapshot=True) as cur:
        (again, finished), = cur.all("SELECT id, finished_at FROM bill_runs")
    assert again == run_id and finished is not None
    assert brm.due_cycles(store, master, nov + 130) == [] and os.listdir(inv) == ["2025-10"]
