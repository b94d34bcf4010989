"""One request's quota work: debit used units, idle fees, grants, rated events.

Shared by the session engine (engine.py) and one-time events (events.py).
Operates on the balance and session objects it is given (the ledger loaded
them inside a write transaction); pure apart from mutating those.
"""

from __future__ import annotations

import attrs

from . import balance as bal
from .model import Account, Balance, Plan, ServiceState, Session, Tariff, service_key
from .rating import affordable, cost, rate_description
from .requests import CreditRequest, Result, ServiceResult, ServiceRequest, quantity
from .units import UNIT_SPELLING, UnitType, ceil_div, currency


@attrs.frozen
class EngineConfig:
    validity_time: int = 600        # Validity-Time when a tariff sets none (seconds)
    tcc_factor: int = 2             # Tcc = factor x Validity-Time (RFC 8506 §13)


MAX_UNITS = 1 << 62     # quantities and amounts saturate here (stored records hold 64 bits)


class MoneyRefused(ValueError):
    """CC-Money the account cannot take: another currency, or too large."""


def money_minor(value, account: Account) -> int:
    """CC-Money (Value-Digits, Exponent[, Currency-Code]) in the account currency's
    minor units, rounded up. mapping.read_units bounds digits and exponent."""
    if isinstance(value, int):
        return value
    digits, exponent = value[0], value[1]
    code = value[2] if len(value) > 2 else None
    numeric, minor = currency(account.currency)
    if code is not None and code != numeric:
        raise MoneyRefused(f"Currency-Code {code} is not the account's {account.currency} ({numeric})")
    shift = exponent + minor
    n = digits * 10 ** shift if shift >= 0 else ceil_div(digits, 10 ** -shift)
    if n > MAX_UNITS:
        raise MoneyRefused(f"{n} minor units is more than 2^62")
    return n


def check_money(services: list, account: Account) -> str | None:
    """Why the request's CC-Money cannot be taken (None: it can), checked before
    anything changes so a refusal leaves balance and session as they were."""
    for svc in services:
        for units in (svc.requested, svc.used):
            if units and UnitType.MONEY in units:
                try:
                    money_minor(units[UnitType.MONEY], account)
                except MoneyRefused as e:
                    return str(e)
    return None


def units_in_minor(d: dict | None, account: Account) -> dict | None:
    if d is None or UnitType.MONEY not in d:
        return d
    return {**d, UnitType.MONEY: money_minor(d[UnitType.MONEY], account)}


class Run:
    """One request's working state."""

    def __init__(self, req: CreditRequest, account: Account, plan: Plan, balance: Balance,
                 session: Session | None, now: int, config: EngineConfig):
        self.req, self.account, self.plan, self.balance = req, account, plan, balance
        self.session, self.now, self.config = session, now, config
        self.events: list = []
        self.rate_at = now           # when units are priced (events: their Event-Timestamp)
        self.identity = session.identity if session else (req.identities[0] if req.identities else "")

    # -- rated events ---------------------------------------------------------
    def event(self, kind: str, q: ServiceState | None, tariff: Tariff | None, units: dict,
              amount: int, impacts: list, unpaid: int = 0, start: int | None = None) -> None:
        self.events.append({
            "type": kind, "account": self.account.id, "identity": self.identity,
            "session": self.req.session_id, "request_number": self.req.number,
            "request_type": int(self.req.request_type), "context": self.req.context,
            "rating_group": q.rating_group if q else None, "service_id": q.service_id if q else None,
            "start": self.now if start is None else start, "end": self.now,
            "units": {UNIT_SPELLING[u]: n for u, n in units.items()}, "plan": self.plan.id,
            "rate": rate_description(tariff, self.plan, self.now if start is None else start)
            if tariff else None,
            "amount": amount, "currency": self.account.currency, "impacts": impacts,
            "unpaid": unpaid, "balance_after": bal.summary(self.balance, self.now)})

    # -- debit ------------------------------------------------------------------
    def charge(self, q: ServiceState, tariff: Tariff, used: int, kind: str, start: int) -> None:
        """Debit `used` units: free units, then allowances, then money."""
        if used <= 0:
            return
        impacts: list = []
        if tariff.unit == UnitType.MONEY:
            money = used
        else:
            free = max(0, min(used, tariff.free_units - q.used))
            rest = used - free
            impacts, uncovered = bal.debit_units(self.balance, UNIT_SPELLING[tariff.unit],
                                                 q.rating_group, rest, self.now)
            money = cost(tariff, self.plan, uncovered, q.used + used - uncovered, start)
        m_impacts, unpaid = bal.debit_money(self.balance, money, self.account.credit_limit, self.now)
        q.used = min(q.used + used, MAX_UNITS)
        q.charged = min(q.charged + money - unpaid, MAX_UNITS)
        self.event(kind, q, tariff, {tariff.unit: used}, money - unpaid, impacts + m_impacts,
                   unpaid, start)

    def idle_fee(self, q: ServiceState, tariff: Tariff, used: int, previous_report: int) -> None:
        """EV parking/idle fee: per started minute after energy stops, past the grace."""
        if tariff.idle_price_per_minute <= 0:
            return
        if used > 0:
            q.energy_at, q.stopped_at, q.idle_minutes = self.now, None, 0
            return
        if q.energy_at is None:
            return
        if q.stopped_at is None:
            q.stopped_at = previous_report
        idle = self.now - q.stopped_at - tariff.idle_grace
        minutes = ceil_div(idle, 60) if idle > 0 else 0
        new = minutes - q.idle_minutes
        if new <= 0:
            return
        amount = new * tariff.idle_price_per_minute
        impacts, unpaid = bal.debit_money(self.balance, amount, self.account.credit_limit, self.now)
        q.idle_minutes = minutes
        q.charged += amount - unpaid
        charged_from = q.stopped_at + tariff.idle_grace + (minutes - new) * 60
        self.event("idle_fee", q, tariff, {UnitType.TIME: new * 60}, amount - unpaid, impacts,
                   unpaid, start=charged_from)

    # -- grant ----------------------------------------------------------------
    def affordable_units(self, q: ServiceState, tariff: Tariff, wanted: int) -> tuple[int, int, int]:
        """(free, from allowances, bought with money) units toward `wanted`."""
        return self._afford(q, tariff, wanted)[:3]

    def _afford(self, q: ServiceState, tariff: Tariff, wanted: int) -> tuple[int, int, int, int, int]:
        """As affordable_units, plus the money and allowance units available."""
        money = bal.free_money(self.balance, self.account.credit_limit, self.now)
        if tariff.unit == UnitType.MONEY:
            return 0, 0, min(wanted, money), money, 0
        free = max(0, min(wanted, tariff.free_units - q.used))
        units = bal.free_units(self.balance, UNIT_SPELLING[tariff.unit], q.rating_group, self.now)
        allow = min(wanted - free, units)
        bought = affordable(tariff, self.plan, money, wanted - free - allow, q.used + free + allow,
                            self.rate_at)
        return free, allow, bought, money, units

    def grant(self, svc: ServiceRequest, q: ServiceState, tariff: Tariff) -> ServiceResult:
        asked = quantity(svc.requested or {}, tariff.unit)
        wanted = asked if asked else max(tariff.default_quota, 1)
        free, allow, bought, money, units = self._afford(q, tariff, wanted)
        granted = free + allow + bought
        res = ServiceResult(q.rating_group, q.service_id)
        if granted <= 0:
            q.final = True
            res.result_code = Result.CREDIT_LIMIT_REACHED
            res.final_unit = tariff.final_unit
            if tariff.final_unit.action != "terminate":
                # RFC 8506 §5.6.3: FUI with Validity-Time and no grant: the client
                # redirects/restricts at once and asks again when it expires
                res.validity_time = tariff.restricted_validity_time
            return res
        impacts = []
        if allow:
            impacts += bal.reserve_units(self.balance, UNIT_SPELLING[tariff.unit], q.rating_group,
                                         allow, self.now)
        position = q.used + free + allow
        price = bought if tariff.unit == UnitType.MONEY else cost(tariff, self.plan, bought, position,
                                                                  self.rate_at)
        if price:
            impacts += bal.reserve_money(self.balance, price, self.account.credit_limit, self.now)
        q.granted, q.impacts = granted, impacts
        # final units: less than wanted, or nothing left for one more unit after this grant
        if granted < wanted:
            q.final = True
        elif tariff.unit == UnitType.MONEY:
            q.final = money - price <= 0
        else:
            after = q.used + granted
            q.final = not (units - allow > 0 or tariff.free_units > after
                           or cost(tariff, self.plan, 1, after, self.rate_at) <= money - price)
        res.granted = {tariff.unit: granted}
        res.validity_time = tariff.validity_time or self.config.validity_time
        if q.final:
            res.final_unit = tariff.final_unit
        if tariff.quota_threshold is not None:
            res.quota_threshold = (tariff.unit, tariff.quota_threshold)
        res.quota_holding_time = tariff.quota_holding_time
        return res

    # -- one service of a session request ---------------------------------------
    def serve(self, svc: ServiceRequest, may_grant: bool, previous_report: int) -> ServiceResult:
        s = self.session
        tariff = self.plan.tariff(self.req.context, svc.rating_group, svc.service_id)
        if tariff is None:
            return ServiceResult(svc.rating_group, svc.service_id, Result.RATING_FAILED)
        key = service_key(svc.rating_group, svc.service_id)
        q = s.services.get(key)
        if q is None:
            q = s.services[key] = ServiceState(svc.rating_group, svc.service_id, tariff.unit)
        bal.release(self.balance, q.impacts)
        q.impacts, q.granted = [], 0
        used = quantity(units_in_minor(svc.used, self.account), tariff.unit) or 0
        self.charge(q, tariff, used, "usage", previous_report)
        self.idle_fee(q, tariff, used, previous_report)
        restricted = q.final and tariff.final_unit.action != "terminate"
        if may_grant and (svc.requested is not None or (restricted and not svc.used)):
            # RFC 8506 §5.6.2: when the restricted Validity-Time runs out the client
            # sends a CCR-U without USU, and the server must try to reserve again
            # a copy: the request is the caller's, and a speculative run
            # (ocs/store/speculate.py) may decide it again on other state
            asked = attrs.evolve(svc, requested=units_in_minor(svc.requested, self.account) or {})
            return self.grant(asked, q, tariff)
        res = ServiceResult(q.rating_group, q.service_id)
        if restricted:
            # RFC 8506 §5.6.2: final units used under REDIRECT/RESTRICT: debit, no new
            # reservation, Validity-Time says how long the restricted access lasts
            res.validity_time = tariff.restricted_validity_time
        return res

    def release_all(self) -> None:
        for q in self.session.services.values():
            bal.release(self.balance, q.impacts)
            q.impacts, q.granted = [], 0

