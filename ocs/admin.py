"""`ocs accounts ...`: provisioning and inspection without the master database.

Each command opens the store itself (the node may be running: LMDB lets
several processes share the environment, and writes queue on its lock), runs
one transaction and prints JSON or one line. Errors are one line on stderr
and exit status 2.
"""

from __future__ import annotations

import json
import sys
import time
import tomllib

from .charging import provision as prov
from .charging import balance as bal
from .charging.model import MONEY, Account, Bucket
from .charging.notices import queue_notices
from .charging.records import decode_event, plan_from_dict, plan_to_dict

BENCH_PLAN = {"id": "bench", "name": "benchmark plan (loadgen traffic)", "currency": "EUR", "tariffs": [
    {"context": "32251@3gpp.org", "unit": "total_octets", "price": 1, "per": 1048576, "rounding": 1024,
     "default_quota": 10485760, "validity_time": 600},
    {"context": "32274@3gpp.org", "unit": "service_specific_units", "price": 5, "default_quota": 1}]}


def add_parser(sub) -> None:
    a = sub.add_parser("accounts", help="create, show, top up, suspend accounts; list sessions")
    a.add_argument("--config", help="TOML configuration file (its [store] is used)")
    a.add_argument("--store", help="LMDB folder (overrides [store] path)")
    acts = a.add_subparsers(dest="action", required=True)
    c = acts.add_parser("create", help="create an account")
    c.add_argument("id")
    c.add_argument("--plan", required=True)
    c.add_argument("--identity", action="append", default=[], help="KIND:VALUE, e.g. e164:46700000001")
    c.add_argument("--balance", type=int, default=0, help="starting money in minor units")
    c.add_argument("--currency", default="EUR")
    c.add_argument("--credit-limit", type=int, default=0)
    c.add_argument("--name", default="")
    for name in ("show", "sessions", "suspend", "resume", "close"):
        x = acts.add_parser(name, help=f"{name} an account" if name != "sessions" else "open sessions")
        x.add_argument("id")
    t = acts.add_parser("top-up", help="add money (minor units) or allowance units")
    t.add_argument("id")
    t.add_argument("amount", type=int)
    t.add_argument("--kind", default=MONEY, help="money (default) or a unit such as total_octets")
    t.add_argument("--bucket", help="bucket id (default: the main money bucket, or a new one)")
    t.add_argument("--expires", type=int, help="expiry, seconds since 1970 (new bucket)")
    ld = acts.add_parser("load", help="load plans and accounts from a TOML data file")
    ld.add_argument("file")
    p = acts.add_parser("plan", help="add or replace a price plan from a TOML/JSON file, or show one")
    p.add_argument("what", help="a file, or the id of a plan to show")
    g = acts.add_parser("generate", help="bulk accounts for benchmarks (acct-<number>)")
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--start", type=int, default=0)
    g.add_argument("--prefix", default="4670")
    g.add_argument("--digits", type=int, default=7)
    g.add_argument("--plan", default="bench", help="plan id (default: a built-in benchmark plan)")
    g.add_argument("--balance", type=int, default=100_000_000)
    e = acts.add_parser("events", help="the last rated events in the outbox")
    e.add_argument("--limit", type=int, default=20)
    e.add_argument("--account", help="only this account's events")


def run(args, config) -> int:
    from .service import open_store
    from .store.base import StoreError
    now = int(time.time())
    try:
        with open_store(config) as store:
            out = _dispatch(args, store, now)
    except (prov.ProvisioningError, StoreError, OSError, tomllib.TOMLDecodeError) as e:
        print(f"ocs: {e}", file=sys.stderr)
        return 2
    if out is not None:
        print(json.dumps(out, indent=1, default=str))
    return 0


def _show(txn, account_id: str, now: int) -> dict:
    account, balance = prov.load_account(txn, account_id)
    return {"account": {"id": account.id, "name": account.name, "plan": account.plan_id,
                        "status": account.status, "currency": account.currency,
                        "credit_limit": account.credit_limit, "identities": list(account.identities)},
            "buckets": [{"id": b.id, "kind": b.kind, "amount": b.amount, "reserved": b.reserved,
                         "priority": b.priority, "expires": b.expires,
                         "rating_groups": b.rating_groups} for b in balance.buckets],
            "totals": bal.summary(balance, now),
            "available_money": bal.free_money(balance, account.credit_limit, now)}


def _dispatch(args, store, now: int):
    act = args.action
    if act == "create":
        acc = Account(args.id, args.plan, args.currency, credit_limit=args.credit_limit, name=args.name,
                      identities=tuple(prov.parse_identity(i) for i in args.identity))
        buckets = [Bucket("main", MONEY, args.balance, 0, 1 << 30)]
        store.write(lambda txn: prov.create_account(txn, acc, buckets, now))
        with store.read() as txn:
            return _show(txn, args.id, now)
    if act in ("show", "sessions"):
        with store.read() as txn:
            if act == "show":
                out = _show(txn, args.id, now)
                out["sessions"] = [s.id for s in prov.sessions_of(txn, args.id)]
                return out
            prov.load_account(txn, args.id)
            return [{"session": s.id, "identity": s.identity, "context": s.context,
                     "request_number": s.number, "opened": s.opened_at, "expires": s.expires_at,
                     "services": [{"rating_group": q.rating_group, "service_id": q.service_id,
                                   "granted": q.granted, "reserved": q.impacts, "used": q.used,
                                   "charged": q.charged} for q in s.services.values()]}
                    for s in prov.sessions_of(txn, args.id)]
    if act in ("suspend", "resume", "close"):
        status = {"suspend": "suspended", "resume": "active", "close": "closed"}[act]
        action = {"suspend": "reauth", "close": "abort"}.get(act)

        def change(txn):
            account, _ = prov.load_account(txn, args.id)
            if account.status == status:
                return None                 # unchanged: nothing written, nobody told again
            prov.set_status(txn, args.id, status)
            # the gateways holding its sessions hear of it now (RAR/ASR), not at Validity-Time
            return queue_notices(txn, args.id, action, now, f"account {status}") if action else 0
        noticed = store.write(change)
        if noticed is None:
            print(f"{args.id}: {status} (unchanged)")
        else:
            print(f"{args.id}: {status}" + (f" ({noticed} session(s) notified)" if noticed else ""))
        return None
    if act == "top-up":
        # a closed account's sessions are not re-authorized (queue_notices skips them)
        store.write(lambda txn: (prov.top_up(txn, args.id, args.amount, now, args.kind, args.bucket,
                                             args.expires),
                                 queue_notices(txn, args.id, "reauth", now, "topped up")))
        with store.read() as txn:
            return _show(txn, args.id, now)
    if act == "load":
        with open(args.file, "rb") as fh:
            data = tomllib.load(fh)
        prov.parse_data(data)
        return store.write(lambda txn: prov.load_data(txn, data, now))
    if act == "plan":
        return _plan(args.what, store)
    if act == "generate":
        return _generate(args, store, now)
    if act == "events":
        with store.read() as txn:
            out = []
            for _, raw in txn.items("outbox", reverse=True):
                e = decode_event(raw)
                if args.account is None or e.get("account") == args.account:
                    out.append(e)
                if len(out) >= args.limit:
                    break
            return out[::-1]
    raise prov.ProvisioningError(f"unknown action {act}")


def _plan(what: str, store):
    if what.endswith((".toml", ".json")):
        with open(what, "rb") as fh:
            data = tomllib.load(fh) if what.endswith(".toml") else json.load(fh)
        try:
            plan = plan_from_dict(data)
        except ValueError as e:
            raise prov.ProvisioningError(str(e)) from None
        store.write(lambda txn: prov.put_plan(txn, plan))
        return plan_to_dict(plan)
    from .charging.records import decode_plan
    with store.read() as txn:
        raw = txn.get("plans", what.encode())
        if raw is None:
            raise prov.ProvisioningError(f"no plan {what!r}")
        return plan_to_dict(decode_plan(raw))


def _generate(args, store, now: int):
    if args.plan == "bench":
        plan = plan_from_dict(BENCH_PLAN)
        store.write(lambda txn: prov.put_plan(txn, plan))
    made, step, t0 = 0, 20000, time.monotonic()
    for first in range(args.start, args.start + args.count, step):
        n = min(step, args.start + args.count - first)
        made += store.write(lambda txn: prov.generate(txn, args.plan, args.prefix, args.digits, first, n,
                                                      args.balance, "EUR", now))
        done = first + n - args.start
        print(f"\r{done}/{args.count} accounts", end="", file=sys.stderr, flush=True)
    print(f"\r{args.count}/{args.count} accounts ({made} new) in {time.monotonic() - t0:.1f} s",
          file=sys.stderr)
    return {"created": made, "requested": args.count}
