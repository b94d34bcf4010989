"""`ocs bill`: the bill run of one cycle (a calendar month, UTC) from the master's rated events.

BRM's billing (../shared/reference/brm-ece.md A.5); docs/billing.md has the rules: events
by the cycle their ``end`` falls in; credits and ``session_expired`` make no lines; one
line per (Service-Context-Id, rating group, kind, unit), ``unpaid`` on a line of its own;
tax-exclusive prices, tax rounded half up; payments (money adjustments) listed. Every sum
must fit the master's signed 64 bits, else the run is refused before anything is written.
Run, invoices and lines are written in ONE master transaction (``rerun`` replaces a billed
cycle in it); the files are staged and flushed BEFORE that commit, renamed into place
after it, and only then is the run marked finished. An unfinished run is finished by the
next bill of its cycle and never changed: its staged folder put in place, its published
folder (``bill_run.txt`` names the run) kept, or, both gone, its files written again from
its RECORDED invoices and lines. Money is integer minor units throughout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time

from ..store.base import StoreError
from .invoice_render import (describe, publish_cycle, published_run, recorded_invoices,
                             stage_cycle, staged_path)
from .master import Master, MasterError, connect

COMMAND = "bill"
CREDIT_TYPES = frozenset({"top_up", "initial_balance", "adjustment"})
NO_CHARGE_TYPES = frozenset({"session_expired"})
KINDS = {"usage": "usage", "direct_debit": "usage", "offline_usage": "usage",
         "idle_fee": "idle_fee", "refund": "refund"}
_KIND_ORDER = {"usage": 0, "unpaid": 1, "idle_fee": 2, "refund": 3}
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1       # what the master's BIGINT columns hold


class BillingError(Exception):
    """A bill run that cannot be done; the message says why."""


def cycle_bounds(cycle: str) -> tuple[int, int]:
    """[start, end) of a ``YYYY-MM`` cycle in epoch seconds, UTC."""
    try:
        first = dt.datetime.strptime(cycle, "%Y-%m").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise BillingError(f"cycle {cycle!r}: expected YYYY-MM, e.g. 2026-01") from None
    if len(cycle) != 7:
        raise BillingError(f"cycle {cycle!r}: expected YYYY-MM, e.g. 2026-01")
    if not "1970-01" <= cycle <= "9999-11":
        raise BillingError(f"cycle {cycle!r}: out of range (1970-01 .. 9999-11)")
    nxt = first.replace(year=first.year + (first.month == 12), month=first.month % 12 + 1)
    return int(first.timestamp()), int(nxt.timestamp())


def cycle_of(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m")


def tax_of(subtotal: int, rate_bp: int) -> int:
    """subtotal x rate_bp / 10000, rounded half up (half away from zero when negative)."""
    sign = -1 if subtotal < 0 else 1
    return sign * ((abs(subtotal) * rate_bp + 5000) // 10000)


def add_parser(sub) -> None:
    b = sub.add_parser(COMMAND, help="bill a cycle: invoices from the master's rated events")
    b.add_argument("--cycle", required=True, help="calendar month, UTC: YYYY-MM")
    b.add_argument("--out", help="invoice folder (default [brm] invoice_dir)")
    b.add_argument("--rerun", action="store_true", help="replace the cycle's existing bill run")
    b.add_argument("--config", help="TOML configuration file ([master], [brm], [store])")
    b.add_argument("--master", help="master database URL (overrides [master] url)")
    b.add_argument("--store", help="LMDB folder whose outbox must hold none of the cycle's events")


def run(args, config) -> int:
    try:
        master = connect(config.master.url)
    except (MasterError, OSError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    try:
        master.check_schema()
        start, end = cycle_bounds(args.cycle)
        if os.path.exists(os.path.join(config.store.path, "data.mdb")):
            from ..store.lmdb import LmdbStore
            from .brm import outbox_events_in
            with LmdbStore(config.store.path, readonly=True) as store:
                waiting = outbox_events_in(store, start, end)
            if waiting:
                raise BillingError(f"the outbox of {config.store.path} still holds {waiting} rated "
                                   f"events of {args.cycle}: run `ocs brm-gateway --once` first")
        out = bill(master, args.cycle, args.out or config.brm.invoice_dir, rerun=args.rerun)
    except (BillingError, MasterError, StoreError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    except OSError as e:                   # writing the files, before the commit: nothing recorded
        print(f"ocs: {args.cycle} not billed: {e}", file=sys.stderr)
        return 2
    finally:
        master.close()
    done = "finished the interrupted bill run of" if out["recovered"] else (
        "re-billed" if out["replaced"] else "billed")
    print(f"{done} {args.cycle}: {out['invoices']} invoices, bill run {out['run_id']}, "
          f"files in {out['dir']}" + (" (written again from its recorded invoices)"
                                      if out["rebuilt"] else ""))
    return 0


def bill(master: Master, cycle: str, out_dir: str, rerun: bool = False, now: int | None = None) -> dict:
    """Bill ``cycle`` and write its files; {run_id, invoices, replaced, recovered, rebuilt, dir,
    total}. An unfinished run of the cycle (killed between its commit and marking it finished)
    is finished unchanged (``recovered``): its staged or published files put or left in place,
    or, both gone, written again from its recorded invoices (``rebuilt``)."""
    start, end = cycle_bounds(cycle)
    now = int(time.time()) if now is None else now
    if end > now:
        raise BillingError(f"cycle {cycle} has not ended yet (it ends {_iso(end)})")
    run_id, staged, stored, count = f"BR-{cycle}-{now}", None, None, 0
    try:
        with master.transaction() as cur:
            old = cur.one("SELECT id, finished_at, invoices FROM bill_runs WHERE cycle = ?", (cycle,))
            if old is not None and old[1] is None and not rerun:      # recover: nothing changes
                run_id, count = old[0], old[2]
                if not os.path.isdir(staged_path(out_dir, cycle, run_id)) and published_run(
                        out_dir, cycle) != run_id:
                    stored = recorded_invoices(master, cur, run_id, _payments(cur, start, end))
                    for inv in stored:          # listed again: must be the payments recorded
                        if sum(p["amount"] for p in inv["payments"]) != inv["payments_total"]:
                            raise BillingError(f"bill run {run_id}: the payments of account "
                                               f"{inv['account']['id']} in {cycle} are not those "
                                               "recorded any more; bill it with --rerun")
            else:
                if old is not None and old[1] is not None and not rerun:
                    raise BillingError(f"cycle {cycle} was already billed (bill run {old[0]}, "
                                       f"{_iso(old[1])}); use --rerun to replace it")
                invoices = build_invoices(master, cur, cycle, start, end, run_id, now)
                if old is not None:
                    cur.execute("DELETE FROM invoice_lines WHERE invoice_id IN "
                                "(SELECT id FROM invoices WHERE bill_run_id = ?)", (old[0],))
                    cur.execute("DELETE FROM invoices WHERE bill_run_id = ?", (old[0],))
                    cur.execute("DELETE FROM bill_runs WHERE id = ?", (old[0],))
                _record(cur, run_id, cycle, start, end, now, invoices)
                staged, count = stage_cycle(out_dir, cycle, run_id, invoices), len(invoices)
    except BaseException:
        if staged is not None:                  # the commit failed: the files must not stay
            shutil.rmtree(staged, ignore_errors=True)
        raise
    try:
        if stored is not None:
            stage_cycle(out_dir, cycle, run_id, stored)
        path = publish_cycle(out_dir, cycle, run_id)
    except OSError as e:
        raise BillingError(f"bill run {run_id} of {cycle} is recorded but its files are not in "
                           f"place ({e}); bill {cycle} again to finish it") from None
    with master.transaction() as cur:
        cur.execute("UPDATE bill_runs SET finished_at = ? WHERE id = ?", (int(time.time()), run_id))
        total = sum(r[0] for r in cur.all("SELECT total FROM invoices WHERE bill_run_id = ?",
                                          (run_id,)))
    return {"run_id": run_id, "invoices": count, "replaced": old is not None and staged is not None,
            "recovered": staged is None, "rebuilt": stored is not None, "dir": path, "total": total}


def build_invoices(master: Master, cur, cycle: str, start: int, end: int, run_id: str,
                   now: int) -> list[dict]:
    usage: dict[str, dict] = {}          # account -> line key -> [quantity, events, amount]
    seen: dict[str, tuple] = {}          # account -> (currency, plan) from its events
    for acc, typ, ctx, rg, amount, unpaid, body in master.stream(
            cur, "SELECT account_id, type, context, rating_group, amount, unpaid, body "
                 "FROM rated_events WHERE end_at >= ? AND end_at < ? ORDER BY end_at, event_id",
            (start, end)):
        if typ in CREDIT_TYPES or typ in NO_CHARGE_TYPES:
            continue
        e = json.loads(body)
        units = e.get("units") or {}
        unit = min(units) if units else ""
        qty = units.get(unit, 0)
        lines = usage.setdefault(acc, {})
        currency = seen.get(acc, (e["currency"],))[0]
        if currency != e["currency"]:
            raise BillingError(f"account {acc} has rated events in {currency} and {e['currency']}")
        seen[acc] = (currency, e.get("plan"))            # the latest plan, for an account unknown here
        line = lines.setdefault((ctx, rg, KINDS.get(typ, typ), unit), [0, 0, 0])
        line[0] += qty
        line[1] += 1
        line[2] += amount
        if unpaid:
            line = lines.setdefault((ctx, rg, "unpaid", ""), [0, 0, 0])
            line[1] += 1
            line[2] += unpaid
    payments = _payments(cur, start, end)
    wanted = set(usage) | set(payments)
    accounts = {}
    for row in master.stream(cur, "SELECT a.id, a.name, a.currency, a.plan_id, a.customer_id, c.name, "
                                  "c.email, c.address FROM accounts a LEFT JOIN customers c "
                                  "ON c.id = a.customer_id ORDER BY a.id"):
        if row[0] in wanted:
            accounts[row[0]] = row
    plans = {pid: json.loads(body) for pid, body in cur.all("SELECT id, body FROM plans")}
    invoices = []
    for acc in sorted(wanted):
        row = accounts.get(acc)
        currency, plan_id = seen.get(acc, (None, None))
        if row is not None:
            if currency is not None and currency != row[2]:
                raise BillingError(f"account {acc} is in {row[2]} but has rated events in {currency}")
            currency, plan_id = row[2], row[3]
        tax = (plans.get(plan_id) or {}).get("tax") or {}
        lines = [{"line_no": n, "context": k[0], "rating_group": k[1], "kind": k[2],
                  "description": describe(k[0], k[1], k[2]), "quantity": v[0], "unit": k[3],
                  "events": v[1], "amount": v[2]}
                 for n, (k, v) in enumerate(sorted(usage.get(acc, {}).items(), key=_line_order), 1)]
        subtotal = sum(line["amount"] for line in lines)
        rate_bp = tax.get("rate_bp", 0)
        tax_amount = tax_of(subtotal, rate_bp)
        pays = payments.get(acc, [])
        invoices.append({
            "invoice_id": f"INV-{cycle}-{acc}", "bill_run_id": run_id, "cycle": cycle,
            "period_start": start, "period_end": end, "issued_at": now,
            "account": {"id": acc, "name": row[1] if row else "", "plan": plan_id,
                        "plan_name": (plans.get(plan_id) or {}).get("name", "")},
            "customer": ({"id": row[4], "name": row[5] or "", "email": row[6] or "",
                          "address": row[7] or ""} if row is not None and row[4] else None),
            "currency": currency, "lines": lines, "subtotal": subtotal,
            "unpaid": sum(li["amount"] for li in lines if li["kind"] == "unpaid"),
            "tax_name": tax.get("name", "") if rate_bp else "", "tax_rate_bp": rate_bp,
            "tax": tax_amount, "total": subtotal + tax_amount, "payments": pays,
            "payments_total": sum(p["amount"] for p in pays)})
        check_limits(cycle, invoices[-1])
    return invoices


def check_limits(cycle: str, inv: dict) -> None:
    """Every sum of ``inv`` must fit the master's signed 64 bits (BIGINT): else BillingError
    naming the account and the line, before anything of the run is written."""
    acc = inv["account"]["id"]
    sums = [(f"line {li['line_no']} ({li['description']}) {field}", li[field])
            for li in inv["lines"] for field in ("quantity", "events", "amount")]
    sums += [(f"invoice {field}", inv[field])
             for field in ("subtotal", "unpaid", "tax", "total", "payments_total")]
    for what, value in sums:
        if not INT64_MIN <= value <= INT64_MAX:
            raise BillingError(f"{cycle} not billed: account {acc}, {what} {value} is beyond the "
                               "signed 64-bit range the master stores (-2^63 .. 2^63-1)")


def _payments(cur, start: int, end: int) -> dict[str, list]:
    """Money adjustments recorded in [start, end): account -> [{id, reason, amount, at}]."""
    payments: dict[str, list] = {}
    for pid, acc, reason, amount, at in cur.all(
            "SELECT id, account_id, reason, amount, created_at FROM adjustments WHERE kind = 'money' "
            "AND created_at >= ? AND created_at < ? ORDER BY account_id, created_at, id", (start, end)):
        payments.setdefault(acc, []).append({"id": pid, "reason": reason, "amount": amount, "at": at})
    return payments


def _line_order(item) -> tuple:
    (ctx, rg, kind, unit), _ = item
    return (ctx or "", -1 if rg is None else rg, _KIND_ORDER.get(kind, 9), kind, unit)


def _record(cur, run_id: str, cycle: str, start: int, end: int, now: int, invoices: list) -> None:
    """The run, unfinished (finished_at NULL until its files are in place), invoices, lines."""
    cur.execute("INSERT INTO bill_runs (id, cycle, period_start, period_end, started_at, finished_at, "
                "invoices) VALUES (?, ?, ?, ?, ?, NULL, ?)",
                (run_id, cycle, start, end, now, len(invoices)))
    for inv in invoices:
        cur.execute("INSERT INTO invoices (id, bill_run_id, account_id, customer_id, cycle, currency, "
                    "subtotal, tax_name, tax_rate_bp, tax, total, payments, issued_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (inv["invoice_id"], run_id, inv["account"]["id"],
                     inv["customer"]["id"] if inv["customer"] else None, cycle, inv["currency"],
                     inv["subtotal"], inv["tax_name"], inv["tax_rate_bp"], inv["tax"], inv["total"],
                     inv["payments_total"], inv["issued_at"]))
        if inv["lines"]:
            cur.executemany("INSERT INTO invoice_lines (invoice_id, line_no, context, rating_group, "
                            "description, quantity, unit, events, amount) VALUES "
                            "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [(inv["invoice_id"], li["line_no"], li["context"], li["rating_group"],
                              li["description"], li["quantity"], li["unit"], li["events"], li["amount"])
                             for li in inv["lines"]])


def _iso(ts: int | None) -> str:
    if ts is None:
        return "unfinished"
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
