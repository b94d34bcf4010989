"""Invoice files of a bill run: JSON, CSV and a self-contained HTML page per account, summary.csv.

Pure formatting of the invoice dicts ``ocs.gateways.billing`` builds (their
shape is in docs/billing.md), and ``recorded_invoices``: those dicts read back
from a recorded bill run's rows, to write its files again. Money stays integer
minor units in JSON and CSV; the HTML shows it with the currency's exponent
(ISO 4217, ``ocs.charging.units.CURRENCIES``) using integer arithmetic only.
Every customer-supplied string in the HTML goes through ``html.escape``; the
page has inline CSS and no external assets. The cycle's folder is replaced as a
whole: ``stage_cycle`` writes it beside (``<out>/.<cycle>.<run id>``) and
flushes it to disk, ``publish_cycle`` renames it into place, so a re-run
leaves no stale file of an account no longer billed. ``ocs.gateways.billing``
commits the bill run between the two. ``bill_run.txt`` (written last) names the
bill run whose files the folder holds (``published_run``).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import io
import json
import os
import shutil
from urllib.parse import quote

from ..charging.units import CURRENCIES

SERVICES = {"32251@3gpp.org": "Data", "32260@3gpp.org": "Voice and video calls (IMS)",
            "32274@3gpp.org": "SMS", "32270@3gpp.org": "MMS"}
LINE_COLUMNS = ("line_no", "description", "context", "rating_group", "quantity", "unit", "events",
                "amount")
SUMMARY_COLUMNS = ("invoice_id", "account_id", "customer_id", "customer_name", "currency", "lines",
                   "subtotal", "tax_name", "tax_rate_bp", "tax", "total", "unpaid", "payments", "file")
MARKER = "bill_run.txt"  # the bill run id; never an invoice's name (those end .json/.csv/.html)
STEM_MAX = 100          # bytes of a file stem: the longest file name is 105 bytes (NAME_MAX: 255)


def service_name(context: str | None) -> str:
    if context is None:
        return "Other charges"
    if context in SERVICES:
        return SERVICES[context]
    words = context.split("@")[0].replace("-", " ").replace("_", " ").split()
    if not words:
        return context
    words = [w.upper() if len(w) <= 2 else w for w in words]     # "ev-charging": "EV charging"
    name = " ".join(words)
    return name[:1].upper() + name[1:]


def describe(context: str | None, rating_group: int | None, kind: str) -> str:
    where = ", ".join(x for x in (context, None if rating_group is None else
                                  f"rating group {rating_group}") if x)
    base = f"{service_name(context)} ({where})" if where else service_name(context)
    return {"usage": base, "idle_fee": f"Idle fee: {base}", "refund": f"Refund: {base}",
            "unpaid": f"{base}: usage beyond balance and credit limit"}.get(kind, f"{kind}: {base}")


def kind_of(context: str | None, rating_group: int | None, description: str) -> str:
    """The kind a recorded line's description was made from (the inverse of ``describe``)."""
    for kind in ("usage", "unpaid", "idle_fee", "refund"):
        if describe(context, rating_group, kind) == description:
            return kind
    base = f": {describe(context, rating_group, 'usage')}"
    return description[:-len(base)] if description.endswith(base) else "usage"


def format_money(amount: int, currency: str) -> str:
    exp = CURRENCIES.get(currency, (0, 2))[1]
    sign, n = ("-" if amount < 0 else ""), abs(amount)
    whole, frac = divmod(n, 10 ** exp)
    return f"{currency} {sign}{whole:,}" + (f".{frac:0{exp}d}" if exp else "")


def _scaled(n: int, step: int, label: str) -> str:
    hundredths = (n * 100 + step // 2) // step            # 2 decimals, half up, integers only
    return f"{hundredths // 100:,}.{hundredths % 100:02d} {label}"


def format_quantity(n: int, unit: str, currency: str) -> str:
    if unit.endswith("octets"):
        for step, label in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if n >= step:
                return _scaled(n, step, label)
        return f"{n:,} bytes"
    if unit == "time":
        h, rest = divmod(n, 3600)
        return f"{h}:{rest // 60:02d}:{rest % 60:02d} h"
    if unit == "money":
        return format_money(n, currency)
    if unit == "service_specific_units":
        return f"{n:,} unit{'s' if n != 1 else ''}"
    return f"{n:,} {unit}".strip() if unit else "—"


def format_rate(rate_bp: int) -> str:
    whole, frac = divmod(rate_bp, 100)
    return f"{whole}.{frac:02d}".rstrip("0").rstrip(".") + " %"


def day(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%d %b %Y")


def file_stem(account_id: str) -> str:
    """The file name (without extension) of an account's invoice: the id percent-encoded
    (no path separator, reversible), unless that is empty, longer than STEM_MAX bytes, starts
    with a dot or is ``summary`` (any case): then at most its first 48 characters (no escape
    cut in two), a comma and 16 hex digits of the id's SHA-256. An encoded id never holds a
    comma (it is always escaped), so a hashed name is never another account's plain one."""
    stem = quote(account_id, safe="@+-._=", errors="surrogatepass")
    if stem and len(stem) <= STEM_MAX and stem[0] != "." and stem.lower() != "summary":
        return stem
    prefix = stem[:48]
    if "%" in prefix[-2:]:
        prefix = prefix[:prefix.rindex("%")]
    digest = hashlib.sha256(account_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix.lstrip('.')},{digest}"


def invoice_json(inv: dict) -> str:
    return json.dumps(inv, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def invoice_csv(inv: dict) -> str:
    """One row per line, then subtotal, tax, total and one per payment (``record`` says which)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(("record",) + LINE_COLUMNS + ("currency",))
    for li in inv["lines"]:
        w.writerow(("line",) + tuple("" if li[c] is None else li[c] for c in LINE_COLUMNS)
                   + (inv["currency"],))
    blank = ("",) * 5                     # context .. events
    w.writerow(("subtotal", "", "Subtotal") + blank + (inv["subtotal"], inv["currency"]))
    w.writerow(("tax", "", f"{inv['tax_name'] or 'Tax'} {format_rate(inv['tax_rate_bp'])}")
               + blank + (inv["tax"], inv["currency"]))
    w.writerow(("total", "", "Total") + blank + (inv["total"], inv["currency"]))
    for p in inv["payments"]:
        w.writerow(("payment", "", f"{p['reason']} {p['id']} {day(p['at'])}") + blank
                   + (p["amount"], inv["currency"]))
    return out.getvalue()


def summary_csv(invoices: list) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for inv in invoices:
        c = inv["customer"] or {}
        w.writerow((inv["invoice_id"], inv["account"]["id"], c.get("id", ""), c.get("name", ""),
                    inv["currency"], len(inv["lines"]), inv["subtotal"], inv["tax_name"],
                    inv["tax_rate_bp"], inv["tax"], inv["total"], inv["unpaid"],
                    inv["payments_total"], file_stem(inv["account"]["id"])))
    return out.getvalue()


def recorded_invoices(master, cur, run_id: str, payments: dict) -> list[dict]:
    """The invoice dicts of a bill run recorded in the master (``cur``), to write its files
    again: from its invoices and invoice_lines rows (amounts as recorded), names, addresses
    and plans as the master holds them now, and ``payments`` (account -> list) of its cycle."""
    cycle, start, end = cur.one("SELECT cycle, period_start, period_end FROM bill_runs WHERE id = ?",
                                (run_id,))
    invoices = [dict(zip(("invoice_id", "acc", "cust", "currency", "subtotal", "tax_name",
                          "tax_rate_bp", "tax", "total", "payments_total", "issued_at"), r),
                     bill_run_id=run_id, cycle=cycle, period_start=start, period_end=end, lines=[])
                for r in sorted(cur.all("SELECT id, account_id, customer_id, currency, subtotal, "
                                        "tax_name, tax_rate_bp, tax, total, payments, issued_at FROM "
                                        "invoices WHERE bill_run_id = ?", (run_id,)),
                                key=lambda r: r[1])]
    by_id = {inv["invoice_id"]: inv for inv in invoices}
    for r in cur.all("SELECT l.invoice_id, l.line_no, l.description, l.context, l.rating_group, "
                     "l.quantity, l.unit, l.events, l.amount FROM invoice_lines l JOIN invoices i ON "
                     "i.id = l.invoice_id WHERE i.bill_run_id = ? ORDER BY l.line_no", (run_id,)):
        by_id[r[0]]["lines"].append(dict(zip(LINE_COLUMNS, r[1:]), kind=kind_of(r[3], r[4], r[2])))
    wanted, custs = {i["acc"] for i in invoices}, {i["cust"] for i in invoices}
    accounts = {r[0]: r[1:] for r in master.stream(cur, "SELECT id, name, plan_id FROM accounts")
                if r[0] in wanted}
    customers = {r[0]: r for r in master.stream(cur, "SELECT id, name, email, address FROM customers")
                 if r[0] in custs}
    plans = {pid: json.loads(body) for pid, body in cur.all("SELECT id, body FROM plans")}
    for inv in invoices:
        acc, cust = inv.pop("acc"), inv.pop("cust")
        if acc not in accounts:                 # not in the master: its latest event's plan
            ev = cur.one("SELECT body FROM rated_events WHERE account_id = ? AND end_at >= ? AND "
                         "end_at < ? AND type NOT IN ('top_up', 'initial_balance', 'adjustment', "
                         "'session_expired') ORDER BY end_at DESC, event_id DESC LIMIT 1",
                         (acc, start, end))
            accounts[acc] = ("", json.loads(ev[0]).get("plan") if ev else None)
        name, plan = accounts[acc]
        inv["account"] = {"id": acc, "name": name, "plan": plan,
                          "plan_name": (plans.get(plan) or {}).get("name", "")}
        inv["customer"] = (dict(zip(("id", "name", "email", "address"),
                                    customers.get(cust, (cust, "", "", "")))) if cust else None)
        inv["unpaid"] = sum(li["amount"] for li in inv["lines"] if li["kind"] == "unpaid")
        inv["payments"] = payments.get(acc, [])
    return invoices


def staged_path(out_dir: str, cycle: str, run_id: str) -> str:
    return os.path.join(out_dir, f".{cycle}.{run_id}")


def stage_cycle(out_dir: str, cycle: str, run_id: str, invoices: list) -> str:
    """Write the cycle's files (per account .json/.csv/.html, and summary.csv) into
    ``staged_path`` and flush them to disk; returns that folder. Nothing is left if it fails."""
    from .invoice_html import invoice_html
    os.makedirs(out_dir, exist_ok=True)
    staged = staged_path(out_dir, cycle, run_id)
    shutil.rmtree(staged, ignore_errors=True)
    try:
        os.makedirs(staged)
        for inv in invoices:
            stem = os.path.join(staged, file_stem(inv["account"]["id"]))
            for ext, text in (("json", invoice_json(inv)), ("csv", invoice_csv(inv)),
                              ("html", invoice_html(inv))):
                _write(f"{stem}.{ext}", text)
        _write(os.path.join(staged, "summary.csv"), summary_csv(invoices))
        _write(os.path.join(staged, MARKER), run_id + "\n")
        os.sync()                     # the files are on disk before the bill run commits
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def published_run(out_dir: str, cycle: str) -> str | None:
    """The bill run whose files ``<out_dir>/<cycle>`` holds (its MARKER), or None."""
    try:
        with open(os.path.join(out_dir, cycle, MARKER), encoding="utf-8") as f:
            return f.read().strip() or None
    except (OSError, UnicodeError):
        return None


def publish_cycle(out_dir: str, cycle: str, run_id: str) -> str:
    """Put the staged folder of ``run_id`` in place as ``<out_dir>/<cycle>``, replacing the
    one there (nothing to rename when that already holds ``run_id``'s files); drop other
    leftovers of the cycle (stagings of runs that never committed)."""
    final, old = os.path.join(out_dir, cycle), os.path.join(out_dir, f".{cycle}.old")
    staged = staged_path(out_dir, cycle, run_id)
    if os.path.isdir(staged) or published_run(out_dir, cycle) != run_id:
        if not os.path.isdir(staged):
            raise FileNotFoundError(2, "staged invoice folder missing", staged)
        shutil.rmtree(old, ignore_errors=True)
        if os.path.exists(final):
            os.rename(final, old)
        os.rename(staged, final)
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(fd)                  # the rename is on disk before the run is marked finished
    finally:
        os.close(fd)
    for name in os.listdir(out_dir):
        if name.startswith(f".{cycle}."):
            shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
    return final


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def escape(text) -> str:
    return html.escape(str(text), quote=True)
