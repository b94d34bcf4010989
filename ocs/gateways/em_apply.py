"""How master data lands in the LMDB cache: transaction functions of the EM gateway.

Rules (issue 4, brm-ece.md A.3):
- master data (plans, accounts, identities, status, credit limit) overwrite
  the cache's copy; the balance the engine is consuming is never overwritten;
- top-ups and adjustments are deltas applied once: the key ``adj:<id>`` in
  ``meta`` marks an applied one, written in the same transaction as the delta;
- the change-log cursor (``em:cursor`` in ``meta``) moves in the same
  transaction as the changes it covers, so a restart resumes exactly;
- an account with open sessions that is suspended, topped up or moved to
  another plan gets a re-authorize notice (RAR) for each session; a closed
  one gets an abort notice (ASR). The node sends them (ocs/net).
"""

from __future__ import annotations

import json
import logging

from ..charging import balance as bal
from ..charging.ledger import append_events
from ..charging.model import MONEY, Account, Balance, Bucket
from ..charging.provision import put_plan
from ..charging.units import UNIT_NAMES
from . import rebuild
from ..charging.records import (RecordError, check_bucket, decode_account, decode_balance, encode_account,
                                encode_balance, plan_from_dict)

log = logging.getLogger("ocs.em")

CURSOR = b"em:cursor"
MASTER_ID = b"em:master_id"
LOADING = b"em:loading"
APPLIED = b"adj:"
FAILED = b"em:failed:"
"""+ entity + ":" + key -> why that master change could not be applied (`--check` lists them)."""



class SyncError(Exception):
    """The cache cannot follow this master (another master's cache, a broken change)."""


# what applying one change can raise before it has written anything: bad data the
# master let through must not stop the changes behind it
APPLY_ERRORS = (SyncError, RecordError, ValueError, TypeError, KeyError)


def cursor(txn) -> int | None:
    raw = txn.get("meta", CURSOR)
    return int(raw) if raw is not None else None


def account_from_row(row: tuple, identities: list) -> Account:
    id, plan_id, currency, status, credit_limit, name, _customer = row
    return Account(id, plan_id, currency, status, int(credit_limit), tuple(identities), name or "")


MAX_KEY = 400      # octets; LMDB refuses keys over 511, and some keys add a prefix


def check_keys(account: Account) -> None:
    """Refuse, before any write, what the cache cannot store as a key."""
    for text in (account.id, *account.identities):
        if not text or len(text.encode()) > MAX_KEY:
            raise SyncError(f"account {account.id[:40]!r}: id or identity of "
                            f"{len(text.encode())} octets (at most {MAX_KEY})")


def apply_plan(txn, body: dict) -> None:
    if len(str(body.get("id", "")).encode()) > MAX_KEY:
        raise SyncError(f"plan id of more than {MAX_KEY} octets")
    put_plan(txn, plan_from_dict({k: v for k, v in body.items() if k != "tax"}))


def apply_account(txn, account: Account, now: int, notices: list) -> None:
    """Overwrite the account and its identities; create an empty balance if new."""
    check_keys(account)
    key = account.id.encode()
    raw = txn.get("accounts", key)
    old = decode_account(raw) if raw is not None else None
    if old is None:
        balance = Balance(account.id, [])
        bal.main_bucket(balance)
        txn.put("balances", key, encode_balance(balance))
    else:
        for ident in set(old.identities) - set(account.identities):
            if txn.get("identities", ident.encode()) == key:
                txn.delete("identities", ident.encode())
        if old.status != account.status and account.status == "closed":
            notices.append((account.id, "abort", "account closed"))
        elif old.status != account.status and account.status == "suspended":
            notices.append((account.id, "reauth", "account suspended"))
        elif old.plan_id != account.plan_id:
            notices.append((account.id, "reauth", f"plan changed to {account.plan_id}"))
    txn.put("accounts", key, encode_account(account))
    for ident in account.identities:
        txn.put("identities", ident.encode(), key)


def credit(balance: Balance, adj: tuple) -> Bucket:
    """Apply one adjustment row (master.ADJUSTMENT_COLUMNS) to a balance in memory.
    Everything is checked before the balance is touched (a SyncError leaves it as it was)."""
    id, _account, _reason, kind, amount, bucket_id, expires, rgs = adj
    groups = json.loads(rgs) if rgs else None
    if (kind != MONEY and kind not in UNIT_NAMES) or not isinstance(amount, int) \
            or not (expires is None or isinstance(expires, int)) \
            or not (groups is None or (isinstance(groups, list)
                                       and all(isinstance(g, int) for g in groups))):
        raise SyncError(f"adjustment {id}: not a valid kind, amount, expiry or rating groups")
    if kind == MONEY and bucket_id is None and expires is None:
        bucket = bal.main_bucket(balance)
    else:
        bucket_id = bucket_id or f"adj-{id}"
        bucket = balance.bucket(bucket_id)
        if bucket is not None and bucket.kind != kind:
            raise SyncError(f"adjustment {id}: bucket {bucket_id} holds {bucket.kind}, not {kind}")
        if bucket is None:
            bucket = Bucket(bucket_id, kind, 0, 0, 100, expires,
                            tuple(groups) if groups else None)
            balance.buckets.append(bucket)
    bucket.amount += int(amount)
    return bucket


def apply_adjustment(txn, adj: tuple, now: int, notices: list) -> bool:
    """A top-up or adjustment as a delta, once. False if it was applied before."""
    marker = APPLIED + adj[0].encode()
    if txn.get("meta", marker) is not None:
        return False
    raw = txn.get("accounts", adj[1].encode())
    if raw is None:
        raise SyncError(f"adjustment {adj[0]}: account {adj[1]} is not in the cache")
    account = decode_account(raw)
    balance = decode_balance(txn.get("balances", account.id.encode()))
    bal.prune(balance, now)             # a lapsed bucket of that name is gone: a new one is made
    bucket = credit(balance, adj)
    check_bucket(bucket)
    after = bal.summary(balance, now)          # checks every bucket before anything is written
    amount = int(adj[4])
    txn.put("balances", account.id.encode(), encode_balance(balance))
    txn.put("meta", marker, b"")
    money = bucket.kind == MONEY
    append_events(txn, [{
        "type": "top_up" if adj[2] == "top_up" else "adjustment", "adjustment": adj[0],
        "account": account.id, "identity": account.identities[0] if account.identities else "",
        "session": None, "request_number": None, "request_type": None, "context": None,
        "rating_group": None, "service_id": None, "start": now, "end": now,
        "units": {} if money else {bucket.kind: amount}, "plan": account.plan_id, "rate": None,
        "amount": -amount if money else 0, "currency": account.currency,
        "impacts": [[bucket.id, amount]], "unpaid": 0, "balance_after": after}],
        now)
    if amount > 0:
        notices.append((account.id, "reauth", f"{adj[2]} {adj[0]}"))
    return True


def apply_changes(txn, items: list, expected: int, last: int, now: int) -> int:
    """Apply (entity, key, payload) items read from the master for changes (expected, last].
    A change that cannot be applied is recorded under ``em:failed:`` and skipped: the
    ones behind it still apply. Returns the number of notices queued."""
    at = cursor(txn)
    if at != expected:
        raise SyncError(f"cache cursor is {at}, expected {expected}: is another EM gateway running?")
    notices: list = []
    for entity, key, payload in items:
        failed = FAILED + f"{entity}:{key}".encode()
        try:
            apply_one(txn, entity, payload, now, notices)
        except APPLY_ERRORS as e:
            log.error("cannot apply %s %s: %s", entity, key, e)
            txn.put("meta", failed, str(e).encode())
            continue
        if txn.get("meta", failed) is not None:
            txn.delete("meta", failed)
    txn.put("meta", CURSOR, str(last).encode())
    return queue(txn, notices, now)


def apply_one(txn, entity: str, payload, now: int, notices: list) -> None:
    """Each branch checks everything before its first write."""
    if payload is None:
        return                          # deleted since: nothing of it to apply
    if entity == "plan":
        apply_plan(txn, payload)
    elif entity == "account":
        apply_account(txn, account_from_row(*payload), now, notices)
    elif entity == "adjustment":
        apply_adjustment(txn, payload, now, notices)
    # "customer": names and addresses are for invoices; the cache does not hold them


def queue(txn, notices: list, now: int) -> int:
    if not notices:
        return 0
    from ..charging.notices import queue_notices
    done, n = set(), 0
    for account_id, action, reason in notices:
        if (account_id, action) not in done:
            done.add((account_id, action))
            n += queue_notices(txn, account_id, action, now, reason)
    return n


def load_batch(txn, accounts: list, master_id: str, now: int) -> None:
    """Bulk load: (account, [adjustment rows]). A new account is written whole; the master's
    state is the truth here, so no rated events are written for the balances it holds.
    An account already in the cache (a bulk load interrupted and run again) is updated
    like a change: master data overwritten, only adjustments not yet applied added."""
    if txn.get("meta", MASTER_ID) not in (None, master_id.encode()):
        raise SyncError("the cache was loaded from another master database")
    txn.put("meta", MASTER_ID, master_id.encode())
    txn.put("meta", LOADING, b"1")
    notices: list = []
    for account, adjustments, delivered in accounts:
        try:
            _load_account(txn, account, adjustments, delivered, now, notices)
        except APPLY_ERRORS as e:
            log.error("cannot load account %s: %s", account.id, e)
            txn.put("meta", FAILED + f"account:{account.id}".encode(), str(e).encode())
    queue(txn, notices, now)


def _load_account(txn, account: Account, adjustments: list, delivered: list, now: int,
                  notices: list) -> None:
    check_keys(account)
    key = account.id.encode()
    if txn.get("accounts", key) is not None:
        apply_account(txn, account, now, notices)
        for adj in adjustments:
            apply_adjustment(txn, adj[:8], now, notices)
        return
    if delivered:                       # a cache loaded again: replay the history (rebuild.py)
        replay = rebuild.Replay(account.id, credit).run(adjustments, delivered, now)
        balance, applied, markers = replay.balance, replay.applied, replay.markers
        failed, problems = replay.failed, replay.problems
    else:
        balance, applied, markers, failed, problems = Balance(account.id, []), [], [], [], []
        bal.main_bucket(balance)
        for adj in adjustments:
            try:
                credit(balance, adj[:8])
                applied.append(adj[0])
            except APPLY_ERRORS as e:           # one bad top-up must not cost the account
                failed.append((adj[0], str(e)))
    for adj_id, why in failed:
        log.error("cannot apply adjustment %s: %s", adj_id, why)
        txn.put("meta", FAILED + f"adjustment:{adj_id}".encode(), why.encode())
    for problem in problems:
        log.error("rebuilding account %s: %s", account.id, problem)
    if problems:
        txn.put("meta", FAILED + f"rebuild:{account.id}".encode(), "; ".join(problems).encode()[:4000])
    bal.summary(balance, now)                  # checks every bucket before anything is written
    bal.prune(balance, now)
    for adj_id in applied:
        txn.put("meta", APPLIED + adj_id.encode(), b"")
    for k, v in markers:
        txn.put("meta", k, v)
    txn.put("accounts", key, encode_account(account))
    txn.put("balances", key, encode_balance(balance))
    for ident in account.identities:
        txn.put("identities", ident.encode(), key)


def finish_load(txn, last: int) -> None:
    txn.put("meta", CURSOR, str(last).encode())
    txn.delete("meta", LOADING)
