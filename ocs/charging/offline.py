"""Offline (post-paid) charging: rate usage records without a reservation.

A usage record (format: docs/usage-records.md) says that an identity used
`units` of a service between `start` and `end`. It is rated against the
account's price plan the way the online path rates Used-Service-Unit
(quota.Run.charge): the record is a session of its own (its first units are
the tariff's free units, tiers count from its first unit), the time-of-day
band is the one covering `start`, allowances live when the record is rated
are used before money, and money may go down to minus the account's credit
limit; what lies beyond is recorded as `unpaid` (the usage happened: it is
never refused for want of credit). A suspended account is still rated; a
closed one is not.

`rate_record` is a transaction function (duck-typed txn, like ledger.py). In
one transaction it writes the balance, ONE rated event of type
"offline_usage" (outbox) and the idempotency key `meta/rated:<record id>`
(value: the event id, a space and the hash of the record's normalized content,
`record_key`), so a record is charged at most once however often it is fed,
and a DIFFERENT record reusing a rated id is rejected, not dropped (a marker
holding only an event id, as written before the hash was kept, counts as
"already rated"). A record that cannot be rated raises RecordRejected before
anything is written.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re

import attrs

from . import balance as bal
from .ledger import append_events
from .model import CLOSED, Balance, Plan, Tariff
from .provision import ProvisioningError, parse_identity
from .rating import cost, rate_description
from .records import decode_account, decode_balance, decode_plan, encode_balance
from .units import UNIT_NAMES, UNIT_SPELLING, UnitType

REQUIRED = ("identity", "context", "start", "end", "units", "unit")
OPTIONAL = ("record_id", "id", "rating_group", "service_id")
FIELDS = REQUIRED + OPTIONAL
RATED = b"rated:"            # meta key prefix: record id -> "<event id> <content hash>"
MAX_ID_BYTES = 200           # LMDB keys are at most 511 octets
MAX_UNITS = 1 << 62          # stored quantities hold 64 bits
MAX_TIME = 253402300799      # 9999-12-31T23:59:59Z
MAX_DIGITS = 40              # longer integers are out of every range (and slow to convert)
UNSIGNED32 = (1 << 32) - 1   # Rating-Group, Service-Identifier (RFC 4006 §8.28, §8.29)
_INT = re.compile(r"[+-]?[0-9]+")


class RecordRejected(ValueError):
    """A record that cannot be rated; `reason` is one line, `line` its place in the input."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.line = line


@attrs.frozen
class UsageRecord:
    record_id: str
    identity: str                  # identity key, e.g. "e164:46700000001"
    context: str                   # Service-Context-Id
    rating_group: int | None
    service_id: int | None
    start: int                     # seconds since 1970 UTC
    end: int
    units: int                     # in `unit`
    unit: str                      # spelling of units.UNIT_NAMES, as in plans


def header_problem(columns: list) -> str | None:
    """Why a CSV header cannot be used (None: it can)."""
    unknown = [c for c in columns if c not in FIELDS]
    if unknown:
        return f"unknown column(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}"
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        return f"missing column(s) {', '.join(missing)}"
    if len(set(columns)) != len(columns):
        return "a column is named twice"
    if "record_id" in columns and "id" in columns:
        return "give a record_id or an id column, not both"
    return None


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _int(fields: dict, name: str, lo: int, hi: int) -> int | None:
    v = fields.get(name)
    if _blank(v):
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        n = v
    elif isinstance(v, str) and _INT.fullmatch(v.strip()):
        digits = len(v.strip().lstrip("+-").lstrip("0"))
        if digits > MAX_DIGITS:
            bound = f">= {lo}" if v.strip().startswith("-") else f"<= {hi}"
            raise RecordRejected(f"{name} must be {bound}, not a number of {digits} digits")
        n = int(v.strip())
    else:
        raise RecordRejected(f"{name}: {v!r} is not an integer")
    if n < lo:
        raise RecordRejected(f"{name} must be >= {lo}, not {n}")
    if n > hi:
        raise RecordRejected(f"{name} must be <= {hi}, not {n}")
    return n


def _text(fields: dict, name: str) -> str:
    v = fields.get(name)
    if _blank(v):
        raise RecordRejected(f"missing {name}")
    if not isinstance(v, str):
        raise RecordRejected(f"{name}: {v!r} is not a string")
    return v.strip()


def _time(fields: dict, name: str) -> int:
    """Epoch seconds, or ISO 8601 with a UTC offset (2026-11-23T08:00:00Z)."""
    v = fields.get(name)
    if _blank(v):
        raise RecordRejected(f"missing {name}")
    if not isinstance(v, str) or _INT.fullmatch(v.strip()):
        return _int(fields, name, 0, MAX_TIME)
    try:
        t = datetime.datetime.fromisoformat(v.strip())
    except ValueError:
        raise RecordRejected(f"{name}: {v!r} is neither epoch seconds nor an ISO 8601 time") from None
    if t.tzinfo is None:
        raise RecordRejected(f"{name}: {v!r} has no UTC offset (end it with Z or +00:00)")
    if t.microsecond:
        raise RecordRejected(f"{name}: {v!r} has a fraction of a second; times are whole seconds")
    n = int(t.timestamp())
    if not 0 <= n <= MAX_TIME:
        raise RecordRejected(f"{name}: {v!r} is not between 1970 and 9999 (UTC)")
    return n


def record_key(identity: str, context: str, rating_group, service_id, start: int, end: int,
               units: int, unit: str) -> str:
    """The id of a record that has none: a hash of its normalized content, so the
    same usage is the same record in CSV or JSON, epoch or ISO 8601 times."""
    canon = json.dumps([identity, context, rating_group, service_id, start, end, units, unit],
                       separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


def parse_record(fields: dict, line_no: int | None = None) -> UsageRecord:
    """A UsageRecord from a CSV row or JSON object (values str or int); RecordRejected says why not."""
    try:
        return _parse(fields)
    except RecordRejected as e:
        raise RecordRejected(e.reason, line_no) from None


def _parse(fields: dict) -> UsageRecord:
    for k, v in fields.items():             # JSON may hold lone surrogates: "\ud800"
        for s in (k, v):
            if isinstance(s, str) and not _encodable(s):
                raise RecordRejected(f"field {k!r}: {s!r} is not valid Unicode (a lone surrogate)")
    unknown = sorted(str(k) for k in fields if k not in FIELDS)
    if unknown:
        raise RecordRejected(f"unknown field(s) {', '.join(unknown)}")
    try:
        identity = parse_identity(_text(fields, "identity"))
    except ProvisioningError as e:
        raise RecordRejected(str(e)) from None
    if len(identity.encode()) > MAX_ID_BYTES:
        raise RecordRejected(f"identity is longer than {MAX_ID_BYTES} octets")
    context = _text(fields, "context")
    unit = _text(fields, "unit")
    if unit not in UNIT_NAMES:
        raise RecordRejected(f"unknown unit {unit!r}; expected one of {', '.join(UNIT_NAMES)}")
    rating_group = _int(fields, "rating_group", 0, UNSIGNED32)
    service_id = _int(fields, "service_id", 0, UNSIGNED32)
    start, end = _time(fields, "start"), _time(fields, "end")
    units = _int(fields, "units", 0, MAX_UNITS)
    if units is None:
        raise RecordRejected("missing units")
    if end < start:
        raise RecordRejected(f"end {end} is before start {start}")
    given = [fields[k] for k in ("record_id", "id") if not _blank(fields.get(k))]
    if len(given) > 1:
        raise RecordRejected("give record_id or id, not both")
    if given:
        rid = given[0]
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise RecordRejected(f"record id {rid!r} is neither a string nor an integer")
        rid = str(rid).strip()
        if len(rid.encode()) > MAX_ID_BYTES:
            raise RecordRejected(f"record id is longer than {MAX_ID_BYTES} octets")
    else:
        rid = record_key(identity, context, rating_group, service_id, start, end, units, unit)
    return UsageRecord(rid, identity, context, rating_group, service_id, start, end, units, unit)


def _encodable(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def content_hash(rec: UsageRecord) -> str:
    """`sha256:` + hash of the record's normalized content (its id when it has none)."""
    return record_key(rec.identity, rec.context, rec.rating_group, rec.service_id, rec.start,
                      rec.end, rec.units, rec.unit)


def _service(rec: UsageRecord) -> str:
    out = rec.context
    if rec.rating_group is not None:
        out += f" rating group {rec.rating_group}"
    if rec.service_id is not None:
        out += f" service {rec.service_id}"
    return out


def debit(tariff: Tariff, plan: Plan, balance: Balance, credit_limit: int, rating_group,
          units: int, at: int, now: int) -> tuple[int, list, int]:
    """Debit `units` as one session's usage: free units, allowances, then money.
    Returns (price in minor units, impacts, unpaid part of the price)."""
    impacts: list = []
    if tariff.unit == UnitType.MONEY:
        price = units
    else:
        free = min(units, tariff.free_units)
        impacts, uncovered = bal.debit_units(balance, UNIT_SPELLING[tariff.unit], rating_group,
                                             units - free, now)
        price = cost(tariff, plan, uncovered, units - uncovered, at)
    m_impacts, unpaid = bal.debit_money(balance, price, credit_limit, now)
    return price, impacts + m_impacts, unpaid


def rate_record(txn, rec: UsageRecord, now: int) -> dict:
    """Rate one record in `txn`. Returns {"status": "rated", "record_id", "event"} or,
    for the same record rated before, {"status": "already_rated", "record_id", "event_id"};
    another record under a rated id raises RecordRejected."""
    key = RATED + rec.record_id.encode()
    digest = content_hash(rec)
    prior = txn.get("meta", key)
    if prior is not None:
        event_id, _, rated = bytes(prior).decode().partition(" ")
        if rated and rated != digest:       # no hash: a marker written before hashes were kept
            raise RecordRejected(f"record id {rec.record_id} was rated before with other content "
                                 f"(event {event_id})")
        return {"status": "already_rated", "record_id": rec.record_id, "event_id": event_id}
    owner = txn.get("identities", rec.identity.encode())
    raw = txn.get("accounts", bytes(owner)) if owner is not None else None
    if raw is None:
        raise RecordRejected(f"unknown identity {rec.identity}")
    account = decode_account(raw)
    if account.status == CLOSED:
        raise RecordRejected(f"account {account.id} is closed")
    raw = txn.get("plans", account.plan_id.encode())
    if raw is None:
        raise RecordRejected(f"account {account.id}: no plan {account.plan_id!r}")
    plan = decode_plan(raw)
    tariff = plan.tariff(rec.context, rec.rating_group, rec.service_id)
    if tariff is None:
        raise RecordRejected(f"no tariff for {_service(rec)} in plan {plan.id}")
    if UNIT_NAMES[rec.unit] != tariff.unit:
        raise RecordRejected(f"unit {rec.unit}, but the tariff for {_service(rec)} rates "
                             f"{UNIT_SPELLING[tariff.unit]}")
    raw = txn.get("balances", account.id.encode())
    balance = decode_balance(raw) if raw is not None else Balance(account.id, [])
    price, impacts, unpaid = debit(tariff, plan, balance, account.credit_limit, rec.rating_group,
                                   rec.units, rec.start, now)
    bal.prune(balance, now)
    txn.put("balances", account.id.encode(), encode_balance(balance))
    event = {
        "type": "offline_usage", "account": account.id, "identity": rec.identity,
        "session": None, "request_number": None, "request_type": None, "context": rec.context,
        "rating_group": rec.rating_group, "service_id": rec.service_id,
        "start": rec.start, "end": rec.end, "units": {rec.unit: rec.units}, "plan": plan.id,
        "rate": rate_description(tariff, plan, rec.start), "amount": price - unpaid,
        "currency": account.currency, "impacts": impacts, "unpaid": unpaid,
        "balance_after": bal.summary(balance, now), "record_id": rec.record_id}
    append_events(txn, [event], now)
    txn.put("meta", key, f"{event['event_id']} {digest}".encode())
    return {"status": "rated", "record_id": rec.record_id, "event": event}
