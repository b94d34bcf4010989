"""Versioned JSON encoding of the charging records (format: docs/records.md).

Every stored record is one compact JSON object with `"v"`, its format version.
Decoding refuses a version it does not know instead of guessing, so a newer
writer and an older reader never silently disagree. Plans are validated when
they are decoded, which is also how provisioning checks them.
"""

from __future__ import annotations

import orjson

from .model import (ACCOUNT_STATUSES, MONEY, Account, Balance, Band, Bucket, FinalUnit, Plan,
                    ServiceState, Session, Tariff, Tier, service_key)
from .units import UNIT_NAMES, UNIT_SPELLING, UnitType, currency, unit_type

VERSION = 1
# orjson: the same JSON, 6-10x faster than the stdlib both ways; records are read
# and written several times per CCR inside the group-commit transaction
_dumps = orjson.dumps
_loads = orjson.loads


class RecordError(ValueError):
    pass


def _load(raw: bytes, kind: str) -> dict:
    try:
        d = _loads(raw)
    except orjson.JSONDecodeError as e:
        raise RecordError(f"{kind} record is not JSON: {e}") from None
    if d.get("v") != VERSION:
        raise RecordError(f"{kind} record version {d.get('v')!r} is not supported (expected {VERSION})")
    return d


# -- accounts ----------------------------------------------------------------

def encode_account(a: Account) -> bytes:
    return _dumps({"v": VERSION, "id": a.id, "plan": a.plan_id, "currency": a.currency,
                   "status": a.status, "credit_limit": a.credit_limit,
                   "identities": list(a.identities), "name": a.name})


def decode_account(raw: bytes) -> Account:
    d = _load(raw, "account")
    return Account(d["id"], d["plan"], d["currency"], d["status"], d["credit_limit"],
                   tuple(d["identities"]), d.get("name", ""))


def check_account(a: Account) -> None:
    if a.status not in ACCOUNT_STATUSES:
        raise RecordError(f"account {a.id}: status {a.status!r} is not one of {ACCOUNT_STATUSES}")
    try:
        currency(a.currency)
    except ValueError as e:
        raise RecordError(f"account {a.id}: {e}") from None
    if not isinstance(a.credit_limit, int) or a.credit_limit < 0:
        raise RecordError(f"account {a.id}: credit_limit must be an integer >= 0")


# -- balances ----------------------------------------------------------------

def encode_balance(b: Balance) -> bytes:
    return _dumps({"v": VERSION, "account": b.account_id, "buckets": [
        [k.id, k.kind, k.amount, k.reserved, k.priority, k.expires,
         None if k.rating_groups is None else list(k.rating_groups)] for k in b.buckets]})


def decode_balance(raw: bytes) -> Balance:
    d = _load(raw, "balance")
    return Balance(d["account"], [
        Bucket(i, kind, amount, reserved, prio, exp, None if rgs is None else tuple(rgs))
        for i, kind, amount, reserved, prio, exp, rgs in d["buckets"]])


def check_bucket(b: Bucket) -> None:
    if b.kind != MONEY and b.kind not in UNIT_NAMES:
        raise RecordError(f"bucket {b.id}: kind {b.kind!r} is neither money nor a unit name")
    for name in ("amount", "reserved", "priority"):
        if not isinstance(getattr(b, name), int):
            raise RecordError(f"bucket {b.id}: {name} must be an integer")


# -- sessions ----------------------------------------------------------------

def encode_session(s: Session) -> bytes:
    return _dumps({"v": VERSION, "id": s.id, "account": s.account_id, "identity": s.identity,
                   "context": s.context, "number": s.number, "opened": s.opened_at,
                   "updated": s.updated_at, "expires": s.expires_at, "services": [
                       [q.rating_group, q.service_id, int(q.unit), q.granted, q.impacts, q.final,
                        q.used, q.charged, q.energy_at, q.stopped_at, q.idle_minutes, q.expires]
                       for q in s.services.values()], "recent": s.recent, "peer": s.peer,
                   "origin_host": s.origin_host, "origin_realm": s.origin_realm})


_UNIT_TYPES = tuple(UnitType)      # CC-Unit-Type by value, without the Enum call's cost


def decode_session(raw: bytes) -> Session:
    d = _load(raw, "session")
    services = {}
    for rg, sid, unit, granted, impacts, final, used, charged, e_at, s_at, idle, *rest in d["services"]:
        services[service_key(rg, sid)] = ServiceState(rg, sid, _UNIT_TYPES[unit], granted, impacts,
                                                      final, used, charged, e_at, s_at, idle,
                                                      rest[0] if rest else None)
    # written before origin_host was kept: `peer` was the CCR's Origin-Host then
    peer = d.get("peer", "")
    return Session(d["id"], d["account"], d["identity"], d["context"], d["number"], d["opened"],
                   d["updated"], d["expires"], services, d.get("recent", [d["number"]]),
                   peer, d.get("origin_host", peer), d.get("origin_realm", ""))


# -- plans -------------------------------------------------------------------

def plan_from_dict(d: dict) -> Plan:
    """A plan from its JSON/TOML form, validated (RecordError says what is wrong)."""
    pid = d.get("id")
    if not isinstance(pid, str) or not pid:
        raise RecordError("plan: id must be a non-empty string")
    try:
        currency(d.get("currency", "EUR"))
        tariffs = tuple(_tariff(t) for t in d.get("tariffs", ()))
    except (KeyError, TypeError, ValueError) as e:
        raise RecordError(f"plan {pid}: {e}") from None
    if not tariffs:
        raise RecordError(f"plan {pid}: no tariffs")
    return Plan(pid, d.get("currency", "EUR"), int(d.get("utc_offset_minutes", 0)), tariffs,
                d.get("name", ""))


def _int(d: dict, key: str, default=None, lo: int = 0):
    v = d.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{key} must be an integer >= {lo}, not {v!r}")
    return v


def _hhmm(s: str) -> int:
    h, m = s.split(":")
    minute = int(h) * 60 + int(m)
    if not 0 <= minute <= 1440:
        raise ValueError(f"time of day {s!r} is outside 00:00..24:00")
    return minute


def _tariff(t: dict) -> Tariff:
    unknown = set(t) - _TARIFF_KEYS
    if unknown:
        raise ValueError(f"unknown tariff key(s) {', '.join(sorted(unknown))}")
    fu = t.get("final_unit", {})
    action = fu.get("action", "terminate")
    if action not in ("terminate", "redirect", "restrict_access"):
        raise ValueError(f"final_unit action {action!r} is not terminate, redirect or restrict_access")
    if action == "redirect" and not fu.get("redirect_address"):
        raise ValueError("final_unit action redirect needs redirect_address")
    if "price" not in t:
        raise ValueError(f"tariff for {t.get('context')!r}: price is required")
    tiers = tuple(Tier(_int(x, "from_units"), _int(x, "price")) for x in t.get("tiers", ()))
    if any(a.from_units >= b.from_units for a, b in zip(tiers, tiers[1:])):
        raise ValueError(f"tariff for {t.get('context')!r}: tiers must have increasing from_units")
    return Tariff(
        context=t["context"], unit=unit_type(t["unit"]), price=_int(t, "price"),
        rating_group=_int(t, "rating_group"), service_id=_int(t, "service_id"),
        per=_int(t, "per", 1, 1), rounding=_int(t, "rounding", 1, 1),
        free_units=_int(t, "free_units", 0),
        tiers=tiers,
        bands=tuple(Band(tuple(x["days"]), _hhmm(x["start"]), _hhmm(x["end"]), _int(x, "price"))
                    for x in t.get("bands", ())),
        default_quota=_int(t, "default_quota", 0), validity_time=_int(t, "validity_time", None, 1),
        quota_threshold=_int(t, "quota_threshold"), quota_holding_time=_int(t, "quota_holding_time"),
        final_unit=FinalUnit(action, int(fu.get("redirect_type", 2)), fu.get("redirect_address", ""),
                             tuple(fu.get("filter_ids", ())), tuple(fu.get("restriction_rules", ()))),
        restricted_validity_time=_int(t, "restricted_validity_time", 300, 1),
        idle_price_per_minute=_int(t, "idle_price_per_minute", 0), idle_grace=_int(t, "idle_grace", 0))


_TARIFF_KEYS = {"context", "unit", "price", "rating_group", "service_id", "per", "rounding",
                "free_units", "tiers", "bands", "default_quota", "validity_time", "quota_threshold",
                "quota_holding_time", "final_unit", "restricted_validity_time",
                "idle_price_per_minute", "idle_grace"}


def plan_to_dict(p: Plan) -> dict:
    out = []
    for t in p.tariffs:
        d = {"context": t.context, "unit": UNIT_SPELLING[t.unit], "price": t.price,
             "rating_group": t.rating_group, "service_id": t.service_id, "per": t.per,
             "rounding": t.rounding, "free_units": t.free_units,
             "tiers": [{"from_units": x.from_units, "price": x.price} for x in t.tiers],
             "bands": [{"days": list(x.days), "start": f"{x.start // 60:02d}:{x.start % 60:02d}",
                        "end": f"{x.end // 60:02d}:{x.end % 60:02d}", "price": x.price}
                       for x in t.bands],
             "default_quota": t.default_quota, "validity_time": t.validity_time,
             "quota_threshold": t.quota_threshold, "quota_holding_time": t.quota_holding_time,
             "final_unit": {"action": t.final_unit.action,
                            "redirect_type": t.final_unit.redirect_type,
                            "redirect_address": t.final_unit.redirect_address,
                            "filter_ids": list(t.final_unit.filter_ids),
                            "restriction_rules": list(t.final_unit.restriction_rules)},
             "restricted_validity_time": t.restricted_validity_time,
             "idle_price_per_minute": t.idle_price_per_minute, "idle_grace": t.idle_grace}
        out.append({k: v for k, v in d.items() if v is not None})
    return {"id": p.id, "name": p.name, "currency": p.currency,
            "utc_offset_minutes": p.utc_offset_minutes, "tariffs": out}


def encode_plan(p: Plan) -> bytes:
    return _dumps({"v": VERSION, **plan_to_dict(p)})


_plan_cache: dict[bytes, Plan] = {}


def decode_plan(raw: bytes) -> Plan:
    """Plans are read on every request and change rarely: cache by content."""
    p = _plan_cache.get(raw)
    if p is None:
        d = _load(raw, "plan")
        d.pop("v")
        p = plan_from_dict(d)
        if len(_plan_cache) > 1024:
            _plan_cache.clear()
        _plan_cache[bytes(raw)] = p
    return p


def encode_event(e: dict) -> bytes:
    return _dumps({"v": VERSION, **e})


def decode_event(raw: bytes) -> dict:
    return _load(raw, "rated event")


def encode_notice(n: dict) -> bytes:
    return _dumps({"v": VERSION, **n})


def decode_notice(raw: bytes) -> dict:
    return _load(raw, "notice")
