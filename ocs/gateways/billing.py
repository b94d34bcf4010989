"""`ocs bill`: the bill run of one cycle (a calendar month, UTC) from the master's rated events.

BRM's billing (../shared/reference/brm-ece.md A.5): rated events loaded by the
BRM gateway become invoices. Rules (docs/billing.md has the full story):
- an event belongs to the cycle its ``end`` falls in: ``[first day 00:00 UTC,
  first day of the next month 00:00 UTC)``;
- balance credits (``top_up``, ``initial_balance``, ``adjustment``) are not
  usage, and ``session_expired`` carries no charge: none of them make lines;
- one line per (Service-Context-Id, rating group, kind, unit): kind ``usage``
  (usage, direct debits, offline usage), ``idle_fee``, ``refund``; quantity and
  amount summed, events counted. An event's ``amount`` (debited from the
  balance) goes on that line; its ``unpaid`` (usage the balance and credit limit
  could not cover) goes on a separate "not covered by the balance" line of the
  same service: it is billed, never dropped;
- prices are tax-exclusive: tax = subtotal x rate_bp / 10000, rounded half up
  (away from zero for a negative subtotal), from the plan's ``tax``;
- payments: money adjustments (top-ups first of all) recorded in the master in
  the cycle, listed on the invoice; they do not change its total.
One invoice per account with lines or payments. Run, invoices and lines are
written in ONE master transaction; a cycle already billed is refused unless
``rerun``, which replaces it in that same transaction. The files are written
(and flushed to disk) beside their folder BEFORE that commit, renamed into place
after it, and only then is the run marked finished (``finished_at``): a run
found unfinished is finished by the next bill of its cycle (the staged folder
renamed into place, or, when it is gone, the cycle billed afresh). Money is
integer minor units throughout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time

from ..store.base import StoreError
from .invoice_render import describe, publish_cycle, stage_cycle, staged_path
from .master import Master, MasterError, connect

COMMAND = "bill"
CREDIT_TYPES = frozenset({"top_up", "initial_balance", "adjustment"})
NO_CHARGE_TYPES = frozenset({"session_expired"})
KINDS = {"usage": "usage", "direct_debit": "usage", "offline_usage": "usage",
         "idle_fee": "idle_fee", "refund": "refund"}
_KIND_ORDER = {"usage": 0, "unpaid": 1, "idle_fee": 2, "refund": 3}


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


def outbox_events_in(store, start: int, end: int) -> int:
    """Rated events still in the LMDB outbox (not delivered) that ended in [start, end)."""
    from ..charging.records import decode_event
    with store.read() as txn:
        return sum(1 for _, raw in txn.items("outbox") if start <= decode_event(raw)["end"] < end)


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
          f"files in {out['dir']}")
    return 0


def bill(master: Master, cycle: str, out_dir: str, rerun: bool = False, now: int | None = None) -> dict:
    """Bill ``cycle`` and write its files; {run_id, invoices, replaced, recovered, dir, total}.
    An unfinished run of the cycle (killed between its commit and its files) is finished:
    with its staged folder, that is put in place (``recovered``); without, it is replaced."""
    start, end = cycle_bounds(cycle)
    now = int(time.time()) if now is None else now
    if end > now:
        raise BillingError(f"cycle {cycle} has not ended yet (it ends {_iso(end)})")
    run_id, staged, count = f"BR-{cycle}-{now}", None, 0
    try:
        with master.transaction() as cur:
            old = cur.one("SELECT id, finished_at, invoices FROM bill_runs WHERE cycle = ?", (cycle,))
            if old is not None and old[1] is None and not rerun and os.path.isdir(
                    staged_path(out_dir, cycle, old[0])):
                run_id, count = old[0], old[2]                  # recover: put its files in place
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
        path = publish_cycle(out_dir, cycle, run_id)
    except OSError as e:
        raise BillingError(f"bill run {run_id} of {cycle} is recorded but its files are not in "
                           f"place ({e}); bill {cycle} again to finish it") from None
    with master.transaction() as cur:
        cur.execute("UPDATE bill_runs SET finished_at = ? WHERE id = ?", (int(time.time()), run_id))
        total = cur.one("SELECT coalesce(sum(total), 0) FROM invoices WHERE bill_run_id = ?",
                        (run_id,))[0]
    return {"run_id": run_id, "invoices": count, "replaced": old is not None and staged is not None,
            "recovered": staged is None, "dir": path, "total": total}


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
    payments: dict[str, list] = {}
    for pid, acc, reason, amount, at in cur.all(
            "SELECT id, account_id, reason, amount, created_at FROM adjustments WHERE kind = 'money' "
            "AND created_at >= ? AND created_at < ? ORDER BY account_id, created_at, id", (start, end)):
        payments.setdefault(acc, []).append({"id": pid, "reason": reason, "amount": amount, "at": at})
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
    return invoices


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
