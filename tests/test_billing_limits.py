"""Bill runs whose sums leave the master's signed 64 bits, and the BRM gateway's auto billing
when a bill check fails: refused in one line with nothing written, and the gateway keeps
delivering and retries later with a back-off. SQLite and PostgreSQL."""

import logging

import pytest

from ocs.charging.ledger import append_events
from ocs.cli import main
from ocs.gateways import billing, brm
from ocs.gateways.billing import BillingError, bill
from ocs.store.lmdb import LmdbStore

SEP, OCT, NOV, DEC = 1756684800, 1759276800, 1761955200, 1764547200      # 2025-09-01 .. -12-01
BIG = 1 << 62                          # the most `ocs rate` accepts in one record
DATA, SMS = "32251@3gpp.org", "32274@3gpp.org"
PLAN = {"id": "mobile", "currency": "EUR", "tariffs": [
    {"context": DATA, "unit": "total_octets", "price": 1, "per": 1000, "default_quota": 1000}]}


@pytest.fixture
def store(tmp_path):
    with LmdbStore(str(tmp_path / "lmdb")) as st:
        yield st


def rated(store, master, *events, account="acc-0"):
    """Rated events (as `ocs rate` writes them) into the outbox, then delivered."""
    body = [{"type": "offline_usage", "account": account, "context": ctx, "rating_group": 10,
             "start": end - 60, "end": end, "units": {"total_octets": units}, "plan": "mobile",
             "amount": amount, "unpaid": unpaid, "currency": "EUR"}
            for ctx, end, units, amount, unpaid in events]
    store.write(lambda t: append_events(t, body, DEC))
    assert brm.drain(store, master, 1000)[0] == len(events)


def setup(master, tax_bp=0):
    master.put_plan(dict(PLAN, **({"tax": {"name": "VAT", "rate_bp": tax_bp}} if tax_bp else {})))
    master.put_account("acc-0", "mobile")
    master.put_account("acc-1", "mobile")


def nothing_written(master, out) -> bool:
    with master.transaction(snapshot=True) as cur:
        rows = [cur.one(f"SELECT count(*) FROM {t}")[0] for t in ("bill_runs", "invoices",
                                                                  "invoice_lines")]
    return rows == [0, 0, 0] and (not out.exists() or list(out.iterdir()) == [])


@pytest.mark.parametrize("events, what", [
    ([(DATA, OCT + 9, 1000, BIG, 0)] * 2,
     "line 1 (Data (32251@3gpp.org, rating group 10)) amount 9223372036854775808"),
    ([(DATA, OCT + 9, BIG, 1, 0)] * 2,
     "line 1 (Data (32251@3gpp.org, rating group 10)) quantity 9223372036854775808"),
    ([(DATA, OCT + 9, 1000, 0, BIG)] * 2, "line 2 (Data (32251@3gpp.org, rating group 10): "
                                          "usage beyond balance and credit limit) amount "
                                          "9223372036854775808"),
    ([(DATA, OCT + 9, 1000, BIG, 0), (SMS, OCT + 9, 1000, BIG, 0)],
     "invoice subtotal 9223372036854775808"),
    ([(DATA, OCT + 9, 1000, -BIG, 0)] * 2 + [(DATA, OCT + 9, 1000, -1, 0)],
     "line 1 (Data (32251@3gpp.org, rating group 10)) amount -9223372036854775809"),
])
def test_a_sum_beyond_64_bits_is_refused_naming_account_and_line(store, master, tmp_path, events,
                                                                 what):
    setup(master)
    rated(store, master, (DATA, OCT + 5, 1000, 7, 0), account="acc-1")     # billable on its own
    rated(store, master, *events)
    out = tmp_path / "inv"
    with pytest.raises(BillingError) as e:
        bill(master, "2025-10", str(out), now=NOV + 1)
    assert str(e.value) == (f"2025-10 not billed: account acc-0, {what} is beyond the signed "
                            "64-bit range the master stores (-2^63 .. 2^63-1)")
    assert nothing_written(master, out)


@pytest.mark.parametrize("tax_bp, what", [(20000, "tax 9223372036854775808"),
                                          (10000, "total 9223372036854775808")])
def test_tax_and_total_beyond_64_bits_are_refused(store, master, tmp_path, tax_bp, what):
    setup(master, tax_bp)
    rated(store, master, (DATA, OCT + 9, 1000, BIG, 0))
    with pytest.raises(BillingError, match=f"account acc-0, invoice {what} is beyond"):
        bill(master, "2025-10", str(tmp_path / "inv"), now=NOV + 1)
    assert nothing_written(master, tmp_path / "inv")


def test_payments_beyond_64_bits_are_refused_and_the_cli_says_so_in_one_line(master, tmp_path,
                                                                           capsys):
    setup(master)
    for pid in ("pay-1", "pay-2"):
        master.add_adjustment(pid, "acc-0", BIG)
        with master.transaction() as cur:
            cur.execute("UPDATE adjustments SET created_at = ? WHERE id = ?", (OCT + 9, pid))
    out = tmp_path / "inv"
    args = ["bill", "--cycle", "2025-10", "--master", master.url, "--out", str(out),
            "--store", str(tmp_path / "no-lmdb")]
    assert main(args) == 2
    assert capsys.readouterr().err == ("ocs: 2025-10 not billed: account acc-0, invoice "
                                       "payments_total 9223372036854775808 is beyond the signed "
                                       "64-bit range the master stores (-2^63 .. 2^63-1)\n")
    assert nothing_written(master, out)


def test_sums_at_the_edge_of_64_bits_are_billed(store, master, tmp_path):
    setup(master)
    edge = (1 << 63) - 1 - BIG                         # BIG + edge = 2^63 - 1
    rated(store, master, (DATA, OCT + 9, BIG, BIG, 0), (DATA, OCT + 9, edge, edge, 0))
    out = bill(master, "2025-10", str(tmp_path / "inv"), now=NOV + 1)
    assert out["total"] == (1 << 63) - 1
    with master.transaction(snapshot=True) as cur:
        assert cur.one("SELECT quantity, amount FROM invoice_lines") == ((1 << 63) - 1, (1 << 63) - 1)


def run_gateway(gw, start, seconds, every, feed=None):
    """serve() on a clock that moves ``every`` seconds per loop, for ``seconds``; ``feed(now)``
    may put events into the outbox meanwhile. Returns the times of the bill checks."""
    t, checks, real = [start], [], gw.bill_due

    def clock():
        t[0] += every
        if t[0] >= start + seconds:
            gw.stop.set()
        if feed and not gw.stop.is_set():
            feed(t[0])
        return t[0]

    def bill_due(now):
        checks.append(now - start)
        return real(now)
    gw.clock, gw.bill_due = clock, bill_due
    gw.serve()
    return checks


def test_a_cycle_that_cannot_be_billed_never_stops_delivery(store, master, tmp_path, caplog):
    """October sums past 64 bits: each check fails, logged with its traceback once, retried
    after 60, 120, 240, 480 s; November waits for it (cycles are billed in order) and the
    gateway delivers what arrives meanwhile."""
    setup(master)
    rated(store, master, (DATA, SEP + 9, 1000, 3, 0))
    bill(master, "2025-09", str(tmp_path / "inv"), now=OCT + 1)
    rated(store, master, *[(DATA, OCT + 9, 1000, BIG, 0)] * 2)
    rated(store, master, (DATA, NOV + 9, 1000, 5, 0))
    gw = brm.Gateway(store, master, batch=100, poll_interval=0.001, auto_bill=True,
                     invoice_dir=str(tmp_path / "inv"))
    fed = []

    def feed(now):                                      # a December event every 100 s
        if now % 100 == 0:
            store.write(lambda t: append_events(t, [{
                "type": "offline_usage", "account": "acc-1", "context": DATA, "start": DEC,
                "end": DEC + len(fed), "units": {}, "amount": 1, "unpaid": 0, "currency": "EUR"}],
                now))
            fed.append(now)
    with caplog.at_level(logging.INFO, logger="ocs.brm"):
        checks = run_gateway(gw, DEC + 10 * 86400, 1000, 20, feed)
    assert checks == [20, 80, 200, 440, 920]                    # 60, 120, 240, 480 s apart
    failed = [r for r in caplog.records if r.getMessage().startswith("auto bill: ")]
    assert len(failed) == 5 and [bool(r.exc_info) for r in failed] == [True] + [False] * 4
    assert "Traceback" in caplog.text and caplog.text.count("Traceback") == 1
    assert failed[0].getMessage() == (
        "auto bill: 2025-10 not billed: account acc-0, line 1 (Data (32251@3gpp.org, rating group "
        "10)) amount 9223372036854775808 is beyond the signed 64-bit range the master stores "
        "(-2^63 .. 2^63-1); the cycles after it wait for it (2025-11); delivery goes on; "
        "retrying in 60 s")
    assert failed[-1].getMessage().endswith("retrying in 960 s")
    assert len(fed) == 9 and brm.drain(store, master, 100) == (0, 0)       # all delivered
    with master.transaction(snapshot=True) as cur:
        assert cur.all("SELECT cycle FROM bill_runs") == [("2025-09",)]
        assert cur.one("SELECT count(*) FROM rated_events WHERE end_at >= ?", (DEC,))[0] == 9


def test_any_exception_of_a_bill_check_is_survived_and_billing_resumes(store, master, tmp_path,
                                                                       caplog, monkeypatch):
    """Not only BillingError, MasterError and OSError: whatever one bill check raises (here an
    OverflowError, as the master's driver raised for a sum past 64 bits), the gateway logs it
    and bills again later; a success resets the back-off."""
    setup(master)
    rated(store, master, (DATA, OCT + 9, 1000, 4, 0))
    real, calls = billing.bill, []

    def flaky(*args, **kw):
        calls.append(1)
        if len(calls) <= 2:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(*args, **kw)
    monkeypatch.setattr(billing, "bill", flaky)
    gw = brm.Gateway(store, master, batch=100, poll_interval=0.001, auto_bill=True,
                     invoice_dir=str(tmp_path / "inv"))
    with caplog.at_level(logging.WARNING, logger="ocs.brm"):
        checks = run_gateway(gw, NOV + 10, 400, 20)
    assert checks == [20, 80, 200, 260, 320, 380]       # 60, 120 after failures; 60 after success
    assert caplog.text.count("Traceback") == 1
    assert ("auto bill: 2025-10 not billed: OverflowError: Python int too large to convert to "
            "SQLite INTEGER; the cycles after it wait for it (none due yet)") in caplog.text
    assert gw.bill_failures == 0
    with master.transaction(snapshot=True) as cur:
        assert cur.one("SELECT cycle, finished_at IS NOT NULL FROM bill_runs") == ("2025-10", True)
