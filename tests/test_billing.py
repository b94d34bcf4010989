"""The bill run on SQLite and PostgreSQL: a small data set charged through the real ledger in
LMDB, delivered by the BRM gateway, billed, with every total worked out by hand below."""

import csv
import json

import pytest

from ocs.charging import provision as prov
from ocs.charging.ledger import Ledger
from ocs.charging.requests import CreditRequest, RequestedAction, RequestType, ServiceRequest
from ocs.charging.units import UnitType
from ocs.cli import main
from ocs.gateways import billing, brm
from ocs.gateways.billing import BillingError, bill, cycle_bounds, tax_of
from ocs.gateways.master import connect
from ocs.store.lmdb import LmdbStore

SEP, OCT, NOV = 1756684800, 1759276800, 1761955200      # 2025-09-01, -10-01, -11-01 00:00 UTC
DAY = 86400
DATA, SMS = "32251@3gpp.org", "32274@3gpp.org"
VAT = {"id": "mobile-vat", "name": "Mobile with VAT", "currency": "EUR",
       "tax": {"name": "VAT", "rate_bp": 2500}, "tariffs": [
           {"context": DATA, "rating_group": 10, "unit": "total_octets", "price": 1, "per": 1000,
            "default_quota": 100000, "validity_time": 600},
           {"context": SMS, "unit": "service_specific_units", "price": 5, "default_quota": 1}]}
BASIC = {"id": "basic", "currency": "EUR", "tariffs": [       # no tax
    {"context": DATA, "unit": "total_octets", "price": 3, "per": 1000, "default_quota": 100000}]}
ACCOUNTS = [  # id, plan, identity, money, credit limit, customer
    ("alice", "mobile-vat", "e164:4670001", 1000, 0, "c-alice"),
    ("bob", "basic", "e164:4670002", 100, 50, "c-bob"),
    ("carol", "mobile-vat", "e164:4670003", 0, 0, "c-carol"),
    ("dave", "basic", "e164:4670004", 1000, 0, None)]


def charge(store, ledger, sid, kind, number, who, ctx, now, rsu=None, used=None, action=None, rg=10):
    unit = UnitType.TOTAL_OCTETS if ctx == DATA else UnitType.SERVICE_SPECIFIC_UNITS
    svc = ServiceRequest(rg, None, rsu, {} if used is None else {unit: used})
    req = CreditRequest(sid, kind, number, ctx, [who], action=action, services=[svc])
    return store.write(lambda t: ledger.credit_control(t, req, now, lambda d: b""))[1]


def session(store, ledger, sid, who, start, *used):
    charge(store, ledger, sid, RequestType.INITIAL, 0, who, DATA, start, rsu={})
    for n, u in enumerate(used, 1):
        last = n == len(used)
        charge(store, ledger, sid, RequestType.TERMINATION if last else RequestType.UPDATE, n, who,
               DATA, start + 300 * n, rsu=None if last else {}, used=u)


def sms(store, ledger, sid, who, now, count=1):
    charge(store, ledger, sid, RequestType.EVENT, 0, who, SMS, now, rsu={UnitType.SERVICE_SPECIFIC_UNITS:
           count}, action=RequestedAction.DIRECT_DEBITING, rg=None)


@pytest.fixture
def world(tmp_path, master_url):
    """LMDB with the events below, delivered into a master holding plans, customers, accounts
    and top-ups. Returns (store, master)."""
    master = connect(master_url)
    master.migrate()
    store = LmdbStore(str(tmp_path / "lmdb"))
    for plan in (VAT, BASIC):
        master.put_plan(plan)
    master.put_customer("c-alice", "Alice Andersson", "alice@example.org", "Storgatan 1\n111 22 Stockholm")
    master.put_customer("c-bob", "Bob <Berg> & Sons", "bob@example.org", "Hamngatan 2")
    master.put_customer("c-carol", "Carol Carlsson")
    data = {"plans": [VAT, BASIC], "accounts": []}
    for acc, plan, who, money, limit, customer in ACCOUNTS:
        master.put_account(acc, plan, identities=(who,), credit_limit=limit, customer_id=customer)
        data["accounts"].append({"id": acc, "plan": plan, "identities": [who], "credit_limit": limit,
                                 "buckets": [{"id": "main", "amount": money}]})
    store.write(lambda t: prov.load_data(t, data, SEP + DAY))
    ledger = Ledger()
    a, b, d = "e164:4670001", "e164:4670002", "e164:4670004"
    session(store, ledger, "a-sep", a, SEP + 5 * DAY, 20000)              # September: not billed
    session(store, ledger, "a1", a, OCT + 2 * DAY, 50000, 32000)          # data: 82,000 octets = 82
    sms(store, ledger, "a-sms0", a, OCT - 1)                              # 30 Sep 23:59:59: not billed
    sms(store, ledger, "a-sms1", a, OCT)                                  # first second of October: 5
    sms(store, ledger, "a-sms2", a, NOV - 1)                              # last second of October: 5
    sms(store, ledger, "a-sms3", a, NOV)                                  # November: not billed
    charge(store, ledger, "a-ref", RequestType.EVENT, 0, a, DATA, OCT + 4 * DAY,           # refund -10
           rsu={UnitType.TOTAL_OCTETS: 10000}, action=RequestedAction.REFUND_ACCOUNT)
    store.write(lambda t: prov.top_up(t, "alice", 500, OCT + 5 * DAY))   # a cache top-up: no line
    charge(store, ledger, "a-exp", RequestType.INITIAL, 0, a, DATA, OCT + 6 * DAY, rsu={})
    store.write(lambda t: ledger.expire(t, OCT + 7 * DAY))                # session_expired: no line
    session(store, ledger, "b1", b, OCT + 10 * DAY, 60000)   # 180 rated: 150 debited, 30 unpaid
    session(store, ledger, "d-sep", d, SEP + 9 * DAY, 5000)  # dave: September only
    assert brm.deliver(store, master, 1000)[1] == 0
    for pid, acc, amount, at, kind in [("pay-a0", "alice", 700, SEP + 20 * DAY, "money"),
                                       ("pay-a1", "alice", 2000, OCT + 10 * DAY, "money"),
                                       ("data-a1", "alice", 1000000, OCT + 11 * DAY, "total_octets"),
                                       ("pay-b1", "bob", 500, OCT + 15 * DAY, "money"),
                                       ("pay-c1", "carol", 1000, OCT + 20 * DAY, "money"),
                                       ("pay-d1", "dave", 900, NOV + DAY, "money")]:
        master.add_adjustment(pid, acc, amount, kind=kind)
        with master.transaction() as cur:       # recorded "then": add_adjustment stamps now
            cur.execute("UPDATE adjustments SET created_at = ? WHERE id = ?", (at, pid))
    yield store, master
    store.close()
    master.close()


def test_tax_is_rounded_half_up_in_integers():
    assert [tax_of(s, 2500) for s in (82, 81, 83, 2, 0, -82)] == [21, 20, 21, 1, 0, -21]
    assert tax_of(10**15 + 1, 1250) == 125000000000000   # 125,000,000,000,000.125: no float loss
    assert cycle_bounds("2025-10") == (OCT, NOV) and cycle_bounds("2025-12")[1] == 1767225600
    with pytest.raises(BillingError, match="YYYY-MM"):
        cycle_bounds("2025-13")


def invoices_in_master(master):
    with master.transaction(snapshot=True) as cur:
        invs = {r[2]: r for r in cur.all("SELECT id, bill_run_id, account_id, customer_id, cycle, "
                                         "currency, subtotal, tax_name, tax_rate_bp, tax, total, "
                                         "payments FROM invoices ORDER BY id")}
        lines = cur.all("SELECT invoice_id, line_no, context, rating_group, description, quantity, "
                        "unit, events, amount FROM invoice_lines ORDER BY invoice_id, line_no")
        runs = cur.all("SELECT id, cycle, invoices FROM bill_runs")
    return invs, [tuple(r) for r in lines], [tuple(r) for r in runs]


def test_bill_run_totals_lines_and_payments(world, tmp_path):
    store, master = world
    out = bill(master, "2025-10", str(tmp_path / "inv"))
    assert out["invoices"] == 3 and out["total"] == 103 + 180 + 0
    invs, lines, runs = invoices_in_master(master)
    assert runs == [(out["run_id"], "2025-10", 3)]
    assert sorted(invs) == ["alice", "bob", "carol"]     # dave: September usage, November payment
    # alice: data 50 + 32 = 82, refund -10, SMS 5 + 5 = 10 -> 82; VAT 25 % of 82 = 20.5 -> 21
    assert tuple(invs["alice"][3:]) == ("c-alice", "2025-10", "EUR", 82, "VAT", 2500, 21, 103, 2000)
    # bob: 60,000 octets at 3/1000 = 180: 150 within balance 100 + credit limit 50, 30 unpaid
    assert tuple(invs["bob"][3:]) == ("c-bob", "2025-10", "EUR", 180, "", 0, 0, 180, 500)
    assert tuple(invs["carol"][3:]) == ("c-carol", "2025-10", "EUR", 0, "VAT", 2500, 0, 0, 1000)
    ia, ib = invs["alice"][0], invs["bob"][0]
    data = f"Data ({DATA}, rating group 10)"
    assert lines == [
        (ia, 1, DATA, 10, data, 82000, "total_octets", 2, 82),
        (ia, 2, DATA, 10, f"Refund: {data}", 10000, "total_octets", 1, -10),
        (ia, 3, SMS, None, f"SMS ({SMS})", 2, "service_specific_units", 2, 10),
        (ib, 1, DATA, 10, data, 60000, "total_octets", 1, 150),
        (ib, 2, DATA, 10, f"{data}: usage beyond balance and credit limit", 0, "", 1, 30)]


def test_files_match_the_master_and_the_html_reads_as_an_invoice(world, tmp_path):
    store, master = world
    folder = tmp_path / "inv" / "2025-10"
    out = bill(master, "2025-10", str(tmp_path / "inv"))
    invs, lines, _ = invoices_in_master(master)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{a}.{x}" for a in invs for x in ("json", "csv", "html")] + ["summary.csv", "bill_run.txt"])
    assert (folder / "bill_run.txt").read_text() == out["run_id"] + "\n"
    for acc, row in invs.items():
        doc = json.loads((folder / f"{acc}.json").read_text())
        assert (doc["invoice_id"], doc["bill_run_id"], doc["account"]["id"], doc["currency"],
                doc["subtotal"], doc["tax_name"], doc["tax_rate_bp"], doc["tax"], doc["total"],
                doc["payments_total"]) == tuple(row[i] for i in (0, 1, 2, 5, 6, 7, 8, 9, 10, 11))
        mine = [r[1:] for r in lines if r[0] == row[0]]
        assert [(li["line_no"], li["context"], li["rating_group"], li["description"], li["quantity"],
                 li["unit"], li["events"], li["amount"]) for li in doc["lines"]] == mine
        with open(folder / f"{acc}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [(int(r["line_no"]), r["description"], int(r["amount"])) for r in rows
                if r["record"] == "line"] == [(m[0], m[3], m[7]) for m in mine]
        totals = {r["record"]: int(r["amount"]) for r in rows if r["record"] != "line"
                  and r["record"] != "payment"}
        assert totals == {"subtotal": row[6], "tax": row[9], "total": row[10]}
        assert sum(int(r["amount"]) for r in rows if r["record"] == "payment") == row[11]
    with open(folder / "summary.csv", newline="") as f:
        summary = {r["account_id"]: r for r in csv.DictReader(f)}
    assert {a: int(r["total"]) for a, r in summary.items()} == {"alice": 103, "bob": 180, "carol": 0}
    assert summary["bob"]["unpaid"] == "30" and summary["alice"]["tax_rate_bp"] == "2500"
    page = (folder / "alice.html").read_text()
    for text in ("Alice Andersson", "Storgatan 1\n111 22 Stockholm", "alice@example.org",
                 f"Data ({DATA}, rating group 10)", "80.08 KiB", "EUR 0.82", "VAT 25 %",
                 "EUR 0.21", "EUR 1.03", "EUR -0.10", "Top-up", "EUR 20.00", "01 Oct 2025 – 31 Oct 2025"):
        assert text in page, text
    assert "EUR 7.00" not in page                                   # September's top-up
    bob = (folder / "bob.html").read_text()
    assert "Bob &lt;Berg&gt; &amp; Sons" in bob and "<Berg>" not in bob
    assert "usage beyond balance and credit limit" in bob and "EUR 0.30" in bob
    assert "No charges in this period." in (folder / "carol.html").read_text()
    assert "http" not in page.replace('lang="en"', "")                # no external assets


def test_a_billed_cycle_is_refused_unless_rerun_which_replaces_it(world, tmp_path):
    store, master = world
    first = bill(master, "2025-10", str(tmp_path / "inv"), now=NOV + 3 * DAY)
    with pytest.raises(BillingError, match="already billed.*--rerun"):
        bill(master, "2025-10", str(tmp_path / "inv"))
    with pytest.raises(BillingError, match="has not ended"):
        bill(master, "2025-11", str(tmp_path / "inv"), now=NOV + 3 * DAY)
    # a late event for dave (e.g. offline usage): 5,000 octets at 3/1000 = 15, no tax
    session(store, Ledger(), "d-late", "e164:4670004", OCT + 25 * DAY, 5000)
    brm.deliver(store, master, 100)
    again = bill(master, "2025-10", str(tmp_path / "inv"), rerun=True, now=NOV + 4 * DAY)
    assert again["replaced"] and again["run_id"] != first["run_id"] and again["invoices"] == 4
    invs, lines, runs = invoices_in_master(master)
    assert runs == [(again["run_id"], "2025-10", 4)]
    assert {a: r[10] for a, r in invs.items()} == {"alice": 103, "bob": 180, "carol": 0, "dave": 15}
    assert len(lines) == 6 and {r[1] for r in invs.values()} == {again["run_id"]}
    assert (tmp_path / "inv" / "2025-10" / "dave.html").exists()
    assert sorted(p.name for p in (tmp_path / "inv").iterdir()) == ["2025-10"]


def test_cli_bill_refuses_undelivered_events_and_rerun(world, tmp_path, capsys):
    store, master = world
    lmdb_path, out = store.path, str(tmp_path / "cli")
    sms(store, Ledger(), "a-sms-late", "e164:4670001", OCT + 20 * DAY)       # still in the outbox
    store.close()
    args = ["bill", "--cycle", "2025-10", "--master", master.url, "--store", lmdb_path, "--out", out]
    assert main(args) == 2
    assert "still holds 1 rated events of 2025-10" in capsys.readouterr().err
    with LmdbStore(lmdb_path) as st:
        assert brm.deliver(st, master, 10) == (1, 0)
    assert main(args) == 0
    assert "billed 2025-10: 3 invoices" in capsys.readouterr().out
    assert main(args) == 2
    assert "already billed" in capsys.readouterr().err
    assert main(args + ["--rerun"]) == 0
    assert "re-billed 2025-10: 3 invoices" in capsys.readouterr().out
    # the late SMS is on the re-run: subtotal 82 + 5 = 87, VAT 21.75 -> 22
    assert json.loads(open(f"{out}/2025-10/alice.json").read())["total"] == 109


def test_a_rerun_that_fails_midway_leaves_the_old_run_whole(world, tmp_path, monkeypatch):
    store, master = world
    first = bill(master, "2025-10", str(tmp_path / "inv"), now=NOV + DAY)
    before = invoices_in_master(master)
    real = billing._record

    def record_then_fail(cur, *args):
        real(cur, *args)                   # the new run is written, the old one deleted ...
        raise OSError("disk gone")         # ... and the transaction dies before its commit
    monkeypatch.setattr(billing, "_record", record_then_fail)
    with pytest.raises(OSError):
        bill(master, "2025-10", str(tmp_path / "inv"), rerun=True, now=NOV + 2 * DAY)
    assert invoices_in_master(master) == before and before[2][0][0] == first["run_id"]


def test_cycle_range_is_checked():
    assert cycle_bounds("1970-01")[0] == 0 and cycle_bounds("9999-11")[1] == 253399622400
    for bad in ("9999-12", "1969-12", "0001-01"):
        with pytest.raises(BillingError, match="out of range"):
            cycle_bounds(bad)


def test_cli_bill_of_a_cycle_out_of_range_says_so_in_one_line(master, capsys):
    assert main(["bill", "--cycle", "9999-12", "--master", master.url, "--store", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err == "ocs: cycle '9999-12': out of range (1970-01 .. 9999-11)\n"
