"""`ocs master ...`: the operator's side of the master database (BRM's CSR tools).

Every change goes through ``Master`` (one transaction with its change-log
entry), so a running EM gateway carries it into the cache within its poll
interval (PostgreSQL: at once): a top-up or suspension reaches live sessions
as RAR, a closure as ASR. Errors are one line on stderr, exit status 2.
"""

from __future__ import annotations

import json
import sys
import tomllib
import uuid

from ..charging.model import MONEY
from ..charging.provision import ProvisioningError, parse_data
from .master import Master, MasterError, _check_adjustment, connect

COMMAND = "master"


def add_parser(sub) -> None:
    m = sub.add_parser(COMMAND, help="change the master database: load, top up, suspend, close")
    m.add_argument("--config", help="TOML configuration file (its [master] is used)")
    m.add_argument("--master", help="master database URL (overrides [master] url)")
    acts = m.add_subparsers(dest="action", required=True)
    acts.add_parser("migrate", help="create or upgrade the schema")
    ld = acts.add_parser("load", help="plans, customers and accounts from a TOML data file")
    ld.add_argument("file")
    p = acts.add_parser("plan", help="add or replace a plan from a TOML or JSON file")
    p.add_argument("file")
    t = acts.add_parser("top-up", help="record a top-up (applied to the cache once, by its id)")
    t.add_argument("id", help="account id")
    t.add_argument("amount", type=int, help="minor units of money, or units with --kind")
    t.add_argument("--ref", help="top-up id (default: a new one; give the same to retry safely)")
    t.add_argument("--kind", default=MONEY, help="money (default) or a unit such as total_octets")
    t.add_argument("--bucket", help="bucket id for an allowance")
    t.add_argument("--expires", type=int, help="allowance expiry, seconds since 1970")
    a = acts.add_parser("adjust", help="correct a money balance up or down (minor units)")
    a.add_argument("id")
    a.add_argument("amount", type=int)
    a.add_argument("--ref", help="adjustment id (default: a new one)")
    for name in ("suspend", "resume", "close", "show"):
        x = acts.add_parser(name, help=f"{name} an account")
        x.add_argument("id")


def run(args, config) -> int:
    try:
        master = connect(config.master.url)
    except MasterError as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    try:
        if args.action == "migrate":
            done = master.migrate()
            print(f"master schema at version {master.schema_version()}"
                  + (f" (applied {', '.join(map(str, done))})" if done else " (up to date)"))
            return 0
        master.check_schema()
        out = _act(master, args)
        if out is not None:
            print(json.dumps(out, indent=1) if not isinstance(out, str) else out)
        return 0
    except (MasterError, ProvisioningError, OSError, tomllib.TOMLDecodeError, ValueError,
            TypeError, AttributeError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    finally:
        master.close()


def _act(master: Master, args):
    act = args.action
    if act == "load":
        with open(args.file, "rb") as fh:
            return load(master, tomllib.load(fh))
    if act == "plan":
        with open(args.file, "rb") as fh:
            body = json.load(fh) if args.file.endswith(".json") else tomllib.load(fh)
        master.put_plan(body)
        return f"plan {body.get('id')}: stored"
    if act in ("top-up", "adjust"):
        ref = args.ref or f"{act}-{uuid.uuid4().hex[:12]}"
        kind = getattr(args, "kind", MONEY)
        new = master.add_adjustment(ref, args.id, args.amount, kind=kind,
                                    reason="top_up" if act == "top-up" else "adjustment",
                                    bucket=getattr(args, "bucket", None),
                                    expires=getattr(args, "expires", None))
        return f"{args.id}: {act} {ref} " + ("recorded" if new else "was already recorded")
    if act in ("suspend", "resume", "close"):
        status = {"suspend": "suspended", "resume": "active", "close": "closed"}[act]
        master.set_status(args.id, status)
        return f"{args.id}: {status}"
    with master.transaction(snapshot=True) as cur:
        found = master.account(cur, args.id)
        if found is None:
            raise MasterError(f"no account {args.id!r}")
        row, idents = found
        adjustments = cur.all(f"SELECT {Master.ADJUSTMENT_COLUMNS}, created_at FROM adjustments "
                              "WHERE account_id = ? ORDER BY created_at, id", (args.id,))
    keys = Master.ACCOUNT_COLUMNS.split(", ")
    return {**dict(zip(keys, row)), "identities": idents,
            "adjustments": [dict(zip(Master.ADJUSTMENT_COLUMNS.split(", ") + ["created_at"], a))
                            for a in adjustments]}


def load(master: Master, data: dict) -> dict:
    """Plans, customers and accounts (the format of ocs/demo_data.toml, plus
    ``[[customers]]`` id/name/email/address and an account's ``customer``). Buckets
    become adjustments ``init-<account>-<bucket>``: loading twice adds nothing."""
    if not isinstance(data, dict):
        raise MasterError("a data file holds tables: plans, customers, accounts")
    customers = data.get("customers", [])
    for key in ("plans", "customers", "accounts"):
        if not isinstance(data.get(key, []), list) or not all(isinstance(x, dict)
                                                              for x in data.get(key, [])):
            raise MasterError(f"{key}: expected a list of tables ([[{key}]])")
    owners = {a.get("id"): a.get("customer") for a in data["accounts"]} if "accounts" in data else {}
    try:
        _, accounts = parse_data(data)        # validates plans, accounts and identities
    except (TypeError, AttributeError, ValueError) as e:
        raise MasterError(f"data file: {e}") from None
    # everything is checked before the first write: a bad entry leaves the master unchanged
    for account, buckets in accounts:
        for b in buckets:
            if b.amount:
                _check_adjustment(f"init-{account.id}-{b.id}", b.amount, b.kind, "top_up",
                                  None if b.id == "main" and b.kind == MONEY else b.id, b.expires,
                                  b.rating_groups)
    for c in customers:
        if not isinstance(c, dict) or not c.get("id"):
            raise MasterError("customers: every entry needs an id")
        master.put_customer(c["id"], c.get("name", ""), c.get("email", ""), c.get("address", ""))
    for plan in data.get("plans", []):
        master.put_plan(plan)
    added = 0
    for account, buckets in accounts:
        master.put_account(account.id, account.plan_id, account.currency, account.status,
                           account.credit_limit, account.identities, account.name,
                           owners.get(account.id))
        for b in buckets:
            if b.amount:
                added += master.add_adjustment(
                    f"init-{account.id}-{b.id}", account.id, b.amount, kind=b.kind,
                    reason="top_up", bucket=None if b.id == "main" and b.kind == MONEY else b.id,
                    expires=b.expires, rating_groups=b.rating_groups)
    return {"plans": len(data.get("plans", [])), "customers": len(customers),
            "accounts": len(accounts), "new_top_ups": added}
