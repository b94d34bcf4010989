"""The HTML invoice: one self-contained page a customer can read (and print).

Layout: a header with the invoice number, the customer's name and postal
address beside the invoice details (account, plan, period, issue date), the
charges table (service, events, quantity, amount), subtotal/tax/total, a note
when some usage was not covered by the balance, the payments received in the
period, and a footer saying prices exclude tax. Inline CSS only, no scripts,
fonts or images; every value from the master is escaped (``escape``).
"""

from __future__ import annotations

from .invoice_render import day, escape, format_money, format_quantity, format_rate

_CSS = """
body{margin:0;background:#eef0f3;font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",
Arial,"Liberation Sans",sans-serif;color:#1d2430}
.page{max-width:820px;margin:24px auto;background:#fff;padding:40px 48px;box-shadow:0 1px 4px #0002}
header{display:flex;justify-content:space-between;align-items:flex-start;border-bottom:3px solid
#1f4e79;padding-bottom:16px}
h1{margin:0;font-size:28px;letter-spacing:.08em;color:#1f4e79}
.muted{color:#5b6472}.small{font-size:12px}
.parties{display:flex;justify-content:space-between;gap:32px;margin:24px 0}
.parties h2,section h2{font-size:12px;text-transform:uppercase;letter-spacing:.08em;color:#5b6472;
margin:0 0 6px}
.addr{white-space:pre-line}
dl{display:grid;grid-template-columns:auto auto;gap:2px 16px;margin:0}
dt{color:#5b6472}dd{margin:0;text-align:right}
table{width:100%;border-collapse:collapse;margin:8px 0 0}
th{text-align:left;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#5b6472;
border-bottom:1px solid #c9ced6;padding:6px 8px}
td{padding:7px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tr.unpaid td{background:#fff6e5}
.totals{margin:16px 0 0 auto;width:320px}
.totals td{border:none;padding:4px 8px}
.totals tr.grand td{border-top:2px solid #1d2430;font-weight:700;font-size:16px;padding-top:8px}
.note{background:#fff6e5;border-left:4px solid #e0a100;padding:10px 14px;margin:20px 0}
section{margin-top:28px}
footer{margin-top:36px;border-top:1px solid #c9ced6;padding-top:10px}
"""


def invoice_html(inv: dict) -> str:
    cur = inv["currency"]
    money = lambda n: escape(format_money(n, cur))     # noqa: E731
    c = inv["customer"] or {}
    acc = inv["account"]
    last_day = inv["period_end"] - 86400
    bill_to = [f'<div><strong>{escape(c.get("name") or acc["name"] or acc["id"])}</strong></div>']
    if c.get("address"):
        bill_to.append(f'<div class="addr">{escape(c["address"])}</div>')
    if c.get("email"):
        bill_to.append(f'<div class="muted">{escape(c["email"])}</div>')
    rows = []
    for li in inv["lines"]:
        qty = "—" if li["kind"] == "unpaid" else escape(format_quantity(li["quantity"], li["unit"], cur))
        rows.append(f'<tr class="{escape(li["kind"])}"><td>{escape(li["description"])}</td>'
                    f'<td class="num">{li["events"]:,}</td><td class="num">{qty}</td>'
                    f'<td class="num">{money(li["amount"])}</td></tr>')
    if not rows:
        rows.append('<tr><td colspan="4" class="muted">No charges in this period.</td></tr>')
    tax_label = (f'{escape(inv["tax_name"] or "Tax")} {escape(format_rate(inv["tax_rate_bp"]))}'
                 if inv["tax_rate_bp"] else "Tax (none)")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<title>Invoice {escape(inv["invoice_id"])}</title><style>{_CSS}</style></head>',
        '<body><div class="page"><header><div><h1>INVOICE</h1>',
        f'<div class="muted">{escape(inv["invoice_id"])}</div></div>',
        f'<div class="num"><div class="muted small">Total</div><div style="font-size:22px;'
        f'font-weight:700">{money(inv["total"])}</div></div></header>',
        '<div class="parties"><div><h2>Bill to</h2>', *bill_to, '</div>',
        '<div><h2>Invoice details</h2><dl>',
        f'<dt>Account</dt><dd>{escape(acc["id"])}</dd>',
        *([f'<dt>Account name</dt><dd>{escape(acc["name"])}</dd>'] if acc["name"] else []),
        *([f'<dt>Plan</dt><dd>{escape(acc["plan_name"] or acc["plan"])}</dd>'] if acc["plan"] else []),
        f'<dt>Period</dt><dd>{day(inv["period_start"])} – {day(last_day)}</dd>',
        f'<dt>Issued</dt><dd>{day(inv["issued_at"])}</dd>',
        f'<dt>Currency</dt><dd>{escape(cur)}</dd></dl></div></div>',
        '<section><h2>Charges</h2><table><thead><tr><th>Description</th><th class="num">Events</th>'
        '<th class="num">Quantity</th><th class="num">Amount</th></tr></thead><tbody>',
        *rows, '</tbody></table>',
        '<table class="totals"><tbody>',
        f'<tr><td>Subtotal</td><td class="num">{money(inv["subtotal"])}</td></tr>',
        f'<tr><td>{tax_label}</td><td class="num">{money(inv["tax"])}</td></tr>',
        f'<tr class="grand"><td>Total</td><td class="num">{money(inv["total"])}</td></tr>',
        '</tbody></table></section>']
    if inv["unpaid"]:
        parts.append(f'<div class="note">{money(inv["unpaid"])} of the charges (before tax) is usage '
                     'beyond your balance and credit limit that was not taken from your balance; '
                     'it is billed here.</div>')
    parts.append('<section><h2>Payments received in this period</h2>')
    if inv["payments"]:
        parts.append('<table><thead><tr><th>Date</th><th>Payment</th><th>Reference</th>'
                     '<th class="num">Amount</th></tr></thead><tbody>')
        for p in inv["payments"]:
            label = "Top-up" if p["reason"] == "top_up" else p["reason"].replace("_", " ").capitalize()
            parts.append(f'<tr><td>{day(p["at"])}</td><td>{escape(label)}</td>'
                         f'<td class="muted">{escape(p["id"])}</td>'
                         f'<td class="num">{money(p["amount"])}</td></tr>')
        parts.append(f'<tr><td colspan="3"><strong>Total payments</strong></td><td class="num">'
                     f'<strong>{money(inv["payments_total"])}</strong></td></tr></tbody></table>')
    else:
        parts.append('<p class="muted">No payments in this period.</p>')
    parts += [
        '</section><footer class="muted small">Prices exclude tax; tax is computed on the subtotal. '
        'Usage is billed in the period in which it ended (UTC). Payments are listed for '
        f'information and do not change this invoice\'s total. Bill run '
        f'{escape(inv["bill_run_id"])}.</footer>', '</div></body></html>']
    return "\n".join(parts) + "\n"
