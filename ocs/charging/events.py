"""One-time events: CCR-EVENT with Requested-Action (RFC 4006 §6.3-6.4, IEC).

DIRECT_DEBITING  rate and debit at once; all or nothing per service (4012 when
                 the balance cannot cover it); GSU = the units debited.
REFUND_ACCOUNT   credit the price of the units (or the CC-Money given) to the
                 main money bucket; GSU = the units refunded.
CHECK_BALANCE    Check-Balance-Result ENOUGH_CREDIT (0) or NO_CREDIT (1); no
                 reservation, nothing changes.
PRICE_ENQUIRY    Cost-Information for the units; nothing changes.
No session state is kept; duplicates are caught by the ledger before this runs.
"""

from __future__ import annotations

from . import balance as bal
from .model import CLOSED, SUSPENDED, Account, Balance, Plan, ServiceState
from .rating import cost
from .requests import CreditRequest, Decision, RequestedAction, Result, ServiceResult, quantity
from .quota import Run, check_money, units_in_minor
from .units import UnitType


def decide_event(req: CreditRequest, account: Account | None, plan: Plan | None,
                 balance: Balance | None, now: int, config) -> Decision:
    if req.action is None:
        return Decision.error(Result.MISSING_AVP, "CCR-EVENT without Requested-Action",
                              ("Requested-Action", 0))
    if account is None or account.status == CLOSED or plan is None or balance is None:
        return Decision.error(Result.USER_UNKNOWN, "no active account for the subscriber")
    if req.context not in plan.contexts():
        return Decision.error(Result.RATING_FAILED, f"no tariff for {req.context}",
                              ("Service-Context-Id", req.context))
    bad_money = check_money(req.services, account)
    if bad_money is not None:
        return Decision.error(Result.INVALID_AVP_VALUE, bad_money, ("CC-Money", {"Unit-Value": {"Value-Digits": 0}}))
    action = req.action
    if account.status == SUSPENDED and action in (RequestedAction.DIRECT_DEBITING,
                                                  RequestedAction.CHECK_BALANCE):
        return Decision.error(Result.END_USER_SERVICE_DENIED, "account suspended")
    run = Run(req, account, plan, balance, None, now, config)
    at = req.event_time if req.event_time is not None else now
    run.rate_at = at
    d = Decision(multiple_services=req.multiple_services, currency=account.currency)
    total_cost = 0
    enough = True
    for svc in req.services or []:
        tariff = plan.tariff(req.context, svc.rating_group, svc.service_id)
        res = ServiceResult(svc.rating_group, svc.service_id)
        d.services.append(res)
        if tariff is None:
            res.result_code = Result.RATING_FAILED
            continue
        q = ServiceState(svc.rating_group, svc.service_id, tariff.unit)
        requested = units_in_minor(svc.requested, account) or {}
        units = quantity(requested, tariff.unit) or max(tariff.default_quota, 1)
        price = units if tariff.unit == UnitType.MONEY else cost(tariff, plan, units, 0, at)
        if action == RequestedAction.PRICE_ENQUIRY:
            total_cost += price
        elif action == RequestedAction.CHECK_BALANCE:
            enough = enough and sum(run.affordable_units(q, tariff, units)) >= units
        elif action == RequestedAction.DIRECT_DEBITING:
            if sum(run.affordable_units(q, tariff, units)) < units:
                res.result_code = Result.CREDIT_LIMIT_REACHED
                res.final_unit = tariff.final_unit
                continue
            run.charge(q, tariff, units, "direct_debit", at)
            res.granted = {tariff.unit: units}
        else:  # REFUND_ACCOUNT: only what the request names is refunded
            if not quantity(requested, tariff.unit) and UnitType.MONEY not in requested:
                res.result_code = Result.MISSING_AVP
                continue
            money = requested.get(UnitType.MONEY, price) if tariff.unit != UnitType.MONEY else units
            impacts = bal.credit_money(balance, money)
            run.event("refund", q, tariff, {tariff.unit: units}, -money, impacts, 0, at)
            res.granted = {tariff.unit: units}
    d.events = run.events
    if action == RequestedAction.PRICE_ENQUIRY:
        d.cost = (total_cost, account.currency)
    elif action == RequestedAction.CHECK_BALANCE:
        d.check_balance = 0 if enough else 1
    failed = [r for r in d.services if r.result_code == Result.RATING_FAILED]
    if d.services and len(failed) == len(d.services):
        r = failed[0]
        d.result_code = Result.RATING_FAILED
        d.failed_avp = (("Rating-Group", r.rating_group) if r.rating_group is not None
                        else ("Service-Identifier", r.service_id) if r.service_id is not None
                        else ("Service-Context-Id", req.context))
    elif not req.multiple_services and d.services and d.services[0].result_code != Result.SUCCESS:
        d.result_code = d.services[0].result_code
    return d
