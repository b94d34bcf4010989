"""Bucket arithmetic: reserve, release and debit against an account's balance.

Order of use: allowance buckets (a unit kind, optionally limited to rating
groups) always before money; within a kind, lower `priority` first, then the
earliest expiry. Expired buckets are never used; their reservations can still
be released. Only the main money bucket (id "main", created on demand) may go
below zero, down to minus the account's credit limit; other buckets stop at
zero. A debit takes what is available and reports the rest as `unpaid`.
Impacts are `[bucket id, amount]` pairs: reservations held, or debits made
(negative) and refunds (positive).
"""

from __future__ import annotations

from .model import MONEY, Balance, Bucket

MAIN = "main"
_NEVER = 1 << 62


def _order(b: Bucket) -> tuple:
    return (b.priority, _NEVER if b.expires is None else b.expires, b.id)


def allowances(balance: Balance, kind: str, rating_group: int | None, now: int) -> list[Bucket]:
    if len(balance.buckets) == 1 and balance.buckets[0].kind == MONEY:
        return []                       # the common case: only the main money bucket
    out = [b for b in balance.buckets
           if b.kind == kind and b.live(now)
           and (b.rating_groups is None or rating_group in b.rating_groups)]
    out.sort(key=_order)
    return out


def main_bucket(balance: Balance) -> Bucket:
    b = balance.bucket(MAIN)
    if b is None:
        b = Bucket(MAIN, MONEY, 0, 0, priority=1 << 30)
        balance.buckets.append(b)
    return b


def money_buckets(balance: Balance, now: int) -> list[Bucket]:
    """Money buckets in order of use, the main bucket last."""
    buckets = balance.buckets
    if len(buckets) == 1 and buckets[0].id == MAIN:
        return [buckets[0]]
    main = main_bucket(balance)
    out = [b for b in balance.buckets if b.kind == MONEY and b is not main and b.live(now)]
    out.sort(key=_order)
    out.append(main)
    return out


def _room(b: Bucket, credit_limit: int) -> int:
    return b.free() + (credit_limit if b.id == MAIN else 0)


def free_units(balance: Balance, kind: str, rating_group: int | None, now: int) -> int:
    return sum(max(0, b.free()) for b in allowances(balance, kind, rating_group, now))


def free_money(balance: Balance, credit_limit: int, now: int) -> int:
    return max(0, sum(max(0, _room(b, credit_limit)) for b in money_buckets(balance, now)))


def _take(buckets: list[Bucket], amount: int, credit_limit: int, reserve: bool) -> tuple[list, int]:
    """Reserve (or debit) up to `amount` from buckets in order; (impacts, rest)."""
    impacts = []
    for b in buckets:
        if amount <= 0:
            break
        x = min(amount, _room(b, credit_limit))
        if x <= 0:
            continue
        if reserve:
            b.reserved += x
            impacts.append([b.id, x])
        else:
            b.amount -= x
            impacts.append([b.id, -x])
        amount -= x
    return impacts, amount


def reserve_units(balance: Balance, kind: str, rating_group, amount: int, now: int) -> list:
    impacts, _ = _take(allowances(balance, kind, rating_group, now), amount, 0, True)
    return impacts


def reserve_money(balance: Balance, amount: int, credit_limit: int, now: int) -> list:
    impacts, _ = _take(money_buckets(balance, now), amount, credit_limit, True)
    return impacts


def release(balance: Balance, impacts: list) -> None:
    for bucket_id, amount in impacts:
        b = balance.bucket(bucket_id)
        if b is not None:
            b.reserved = max(0, b.reserved - amount)


def debit_units(balance: Balance, kind: str, rating_group, amount: int, now: int) -> tuple[list, int]:
    """Consume allowance units; returns (impacts, units not covered)."""
    return _take(allowances(balance, kind, rating_group, now), amount, 0, False)


def debit_money(balance: Balance, amount: int, credit_limit: int, now: int) -> tuple[list, int]:
    """Debit money; returns (impacts, unpaid minor units)."""
    return _take(money_buckets(balance, now), amount, credit_limit, False)


def credit_money(balance: Balance, amount: int) -> list:
    main_bucket(balance).amount += amount
    return [[MAIN, amount]]


def summary(balance: Balance, now: int) -> dict:
    """Live totals by kind, for rated events and `ocs accounts show`."""
    buckets = balance.buckets
    if len(buckets) == 1 and buckets[0].expires is None:
        return {buckets[0].kind: buckets[0].amount}
    out: dict = {}
    for b in balance.buckets:
        if b.live(now):
            out[b.kind] = out.get(b.kind, 0) + b.amount
    return out


def prune(balance: Balance, now: int) -> None:
    """Drop expired buckets nothing is reserved in any more."""
    if all(b.expires is None for b in balance.buckets):
        return
    balance.buckets = [b for b in balance.buckets if b.live(now) or b.reserved > 0]
