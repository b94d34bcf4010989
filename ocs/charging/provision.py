"""Provisioning without the master database: plans, accounts, top-ups, status.

Transaction functions over the store's named databases (duck-typed txn, like
the ledger). Used by `ocs accounts`, `ocs demo` and the benchmarks; the EM
gateway will use the same functions when it syncs from the master database.
Every balance change writes a rated event to the outbox in the same
transaction (a top-up is an event with a negative amount: money credited).
"""

from __future__ import annotations

from . import balance as bal
from .ledger import append_events
from .model import ACCOUNT_STATUSES, MONEY, Account, Balance, Bucket, Plan, identity_key
from .records import (RecordError, check_account, check_bucket, decode_account, decode_balance,
                      decode_plan, decode_session, encode_account, encode_balance, encode_plan)


class ProvisioningError(ValueError):
    pass


def put_plan(txn, plan: Plan) -> None:
    txn.put("plans", plan.id.encode(), encode_plan(plan))


def parse_identity(text: str) -> str:
    """`e164:4670...`, `imsi:...`, `sip:alice@example.org`, `nai:...` -> identity key."""
    kind, sep, value = text.partition(":")
    if not sep or not value:
        raise ProvisioningError(f"identity {text!r}: expected KIND:VALUE (e164, imsi, sip, nai, private)")
    try:
        return identity_key(kind, value)
    except ValueError as e:
        raise ProvisioningError(str(e)) from None


def create_account(txn, account: Account, buckets: list, now: int) -> None:
    try:
        check_account(account)
        for b in buckets:
            check_bucket(b)
    except RecordError as e:
        raise ProvisioningError(str(e)) from None
    ids = [b.id for b in buckets]
    if len(ids) != len(set(ids)):
        raise ProvisioningError(f"account {account.id}: bucket ids must be unique, got {ids}")
    if txn.get("accounts", account.id.encode()) is not None:
        raise ProvisioningError(f"account {account.id} exists")
    raw_plan = txn.get("plans", account.plan_id.encode())
    if raw_plan is None:
        raise ProvisioningError(f"account {account.id}: no plan {account.plan_id!r}")
    plan_currency = decode_plan(raw_plan).currency
    if plan_currency != account.currency:
        raise ProvisioningError(f"account {account.id}: currency {account.currency} but plan "
                                f"{account.plan_id} prices in {plan_currency}")
    for ident in account.identities:
        owner = txn.get("identities", ident.encode())
        if owner is not None:
            raise ProvisioningError(f"identity {ident} already belongs to account {owner.decode()}")
    txn.put("accounts", account.id.encode(), encode_account(account))
    for ident in account.identities:
        txn.put("identities", ident.encode(), account.id.encode())
    balance = Balance(account.id, [])
    for b in buckets:
        balance.buckets.append(b)
    bal.main_bucket(balance)
    txn.put("balances", account.id.encode(), encode_balance(balance))
    # one per bucket, empty ones too: a cache rebuilt from delivered events makes them again
    events = [_credit_event(account, b, b.amount, now, "initial_balance") for b in buckets]
    append_events(txn, events, now)


def _credit_event(account: Account, bucket: Bucket, amount: int, now: int, kind: str) -> dict:
    money = bucket.kind == MONEY
    return {"type": kind, "account": account.id, "identity": account.identities[0] if account.identities
            else "", "session": None, "request_number": None, "request_type": None, "context": None,
            "rating_group": None, "service_id": None, "start": now, "end": now,
            "units": {} if money else {bucket.kind: amount}, "plan": account.plan_id, "rate": None,
            "amount": -amount if money else 0, "currency": account.currency,
            "impacts": [[bucket.id, amount]], "unpaid": 0, "balance_after": None,
            # the bucket it credited, whole: a cache rebuilt from delivered events makes it again
            "bucket": {"id": bucket.id, "kind": bucket.kind, "priority": bucket.priority,
                       "expires": bucket.expires, "rating_groups": list(bucket.rating_groups)
                       if bucket.rating_groups is not None else None}}


def load_account(txn, account_id: str) -> tuple[Account, Balance]:
    raw = txn.get("accounts", account_id.encode())
    if raw is None:
        raise ProvisioningError(f"no account {account_id!r}")
    return decode_account(raw), decode_balance(txn.get("balances", account_id.encode()))


def top_up(txn, account_id: str, amount: int, now: int, kind: str = MONEY,
           bucket_id: str | None = None, expires: int | None = None,
           rating_groups: tuple | None = None) -> Balance:
    """Add money to the main bucket (default) or a new/named bucket."""
    if not isinstance(amount, int) or amount <= 0:
        raise ProvisioningError("top-up amount must be a positive integer (minor units or units)")
    account, balance = load_account(txn, account_id)
    bal.prune(balance, now)             # a lapsed bucket of that name is gone: a new one is made
    if bucket_id is None and kind == MONEY and expires is None:
        bucket = bal.main_bucket(balance)
    else:
        bucket = balance.bucket(bucket_id) if bucket_id else None
        if bucket is not None and bucket.kind != kind:
            raise ProvisioningError(f"bucket {bucket.id} holds {bucket.kind}, not {kind}")
        if bucket is None:
            # ids are never reused (a pruned bucket's id could still be named by
            # a reservation being released)
            new_id = bucket_id
            while new_id is None or balance.bucket(new_id) is not None:
                new_id = f"b{txn.next_sequence('bucket')}"
            bucket = Bucket(new_id, kind, 0, 0, 100, expires, rating_groups)
            try:
                check_bucket(bucket)
            except RecordError as e:
                raise ProvisioningError(str(e)) from None
            balance.buckets.append(bucket)
    bucket.amount += amount
    event = _credit_event(account, bucket, amount, now, "top_up")
    event["balance_after"] = bal.summary(balance, now)
    txn.put("balances", account.id.encode(), encode_balance(balance))
    append_events(txn, [event], now)
    return balance


def set_status(txn, account_id: str, status: str) -> Account:
    if status not in ACCOUNT_STATUSES:
        raise ProvisioningError(f"status {status!r} is not one of {', '.join(ACCOUNT_STATUSES)}")
    account, _ = load_account(txn, account_id)
    account.status = status
    txn.put("accounts", account.id.encode(), encode_account(account))
    return account


def sessions_of(txn, account_id: str) -> list:
    """Open sessions of an account, from the account_sessions index."""
    prefix = account_id.encode() + b"\0"
    out = []
    for key, _ in txn.items("account_sessions", prefix, account_id.encode() + b"\1"):
        raw = txn.get("sessions", key[len(prefix):])
        if raw is not None:
            out.append(decode_session(raw))
    return out


def generate(txn, plan_id: str, prefix: str, digits: int, start: int, count: int, money: int,
             currency: str, now: int) -> int:
    """Bulk accounts for benchmarks: id `acct-<n>`, identity e164 prefix + n."""
    if txn.get("plans", plan_id.encode()) is None:
        raise ProvisioningError(f"no plan {plan_id!r}")
    made = 0
    for n in range(start, start + count):
        number = f"{prefix}{n:0{digits}d}"
        acc = Account(f"acct-{number}", plan_id, currency, identities=(f"e164:{number}",))
        if txn.get("accounts", acc.id.encode()) is not None:
            continue
        txn.put("accounts", acc.id.encode(), encode_account(acc))
        txn.put("identities", acc.identities[0].encode(), acc.id.encode())
        txn.put("balances", acc.id.encode(), encode_balance(Balance(acc.id, [
            Bucket("main", MONEY, money, 0, 1 << 30)])))
        made += 1
    return made


def parse_data(data: dict) -> tuple[list, list]:
    """Plans and (account, buckets) from a data file's tables (see ocs/demo_data.toml)."""
    from .records import plan_from_dict
    # customers (names, addresses) belong to the master database; the cache ignores them
    unknown = set(data) - {"plans", "accounts", "customers"}
    if unknown:
        raise ProvisioningError(f"unknown table(s) {', '.join(sorted(unknown))}: expected plans, accounts")
    try:
        plans = [plan_from_dict(p) for p in data.get("plans", [])]
    except RecordError as e:
        raise ProvisioningError(str(e)) from None
    accounts = []
    for a in data.get("accounts", []):
        extra = set(a) - {"id", "name", "plan", "currency", "status", "credit_limit", "identities",
                          "buckets", "customer"}
        if extra or "id" not in a or "plan" not in a:
            raise ProvisioningError(f"account {a.get('id')!r}: needs id and plan"
                                    + (f"; unknown key(s) {', '.join(sorted(extra))}" if extra else ""))
        buckets = []
        for i, b in enumerate(a.get("buckets", [])):
            buckets.append(Bucket(b.get("id", f"b{i + 1}"), b.get("kind", MONEY), b.get("amount", 0), 0,
                                  b.get("priority", 100 if b.get("id") != "main" else 1 << 30),
                                  b.get("expires"), tuple(b["rating_groups"]) if "rating_groups" in b
                                  else None))
        accounts.append((Account(a["id"], a["plan"], a.get("currency", "EUR"), a.get("status", "active"),
                                 a.get("credit_limit", 0),
                                 tuple(parse_identity(i) for i in a.get("identities", [])),
                                 a.get("name", "")), buckets))
    return plans, accounts


def load_data(txn, data: dict, now: int) -> dict:
    """Write plans (replacing) and accounts (skipping ids that exist)."""
    plans, accounts = parse_data(data)
    for p in plans:
        put_plan(txn, p)
    made = 0
    for account, buckets in accounts:
        if txn.get("accounts", account.id.encode()) is None:
            create_account(txn, account, buckets, now)
            made += 1
    return {"plans": len(plans), "accounts": made, "existing": len(accounts) - made}
