"""The credit-control engine (RFC 4006/8506 server side), pure.

`decide(request, account, plan, balance, session, now, config)` returns a
Decision and updates the balance and session objects it was given; the ledger
loaded them in a write transaction and stores them back with the decision's
rated events. Same inputs, same decision: no clock, no I/O, no randomness.

Server state machine (RFC 8506 Table 6):
  Idle  CCR-I processed OK     -> CCA-I, reserve units, start Tcc    -> Open
  Idle  CCR-I not processed OK -> CCA-I with Result-Code != 2001     -> Idle
  Idle  CCR-E                  -> CCA-E (see events.py)              -> Idle
  Open  CCR-U processed OK     -> debit used, reserve new, restart Tcc -> Open
  Open  CCR-U not processed OK -> debit used units                   -> Idle
  Open  CCR-T                  -> debit used units, stop Tcc         -> Idle
  Open  Tcc expired            -> release reserved units (ledger)    -> Idle
Per service (MSCC): debit Used-Service-Unit first (even beyond the grant:
whatever the balance cannot cover is recorded as unpaid), release the old
reservation, then grant min(requested or default quota, what the balance
affords). A grant smaller than asked, or one that leaves nothing for another
unit, carries Final-Unit-Indication; nothing affordable is MSCC 4012.
"""

from __future__ import annotations

from .model import ACTIVE, CLOSED, SUSPENDED, Account, Balance, Plan, Session, service_key
from .events import decide_event
from .quota import EngineConfig, Run, check_money
from .requests import CreditRequest, Decision, RequestType, Result, ServiceResult


def _end(session: Session | None, account: Account | None, plan: Plan | None,
         balance: Balance | None, req: CreditRequest, now: int, config: EngineConfig,
         d: Decision) -> Decision:
    """A refused CCR-U/T on an open session: its reservations go back and it
    closes (Open -> Idle, "not processed OK"); nothing is stranded."""
    if session is not None and balance is not None and account is not None and plan is not None:
        Run(req, account, plan, balance, session, now, config).release_all()
    d.session_closed = session is not None
    return d


def decide(req: CreditRequest, account: Account | None, plan: Plan | None, balance: Balance | None,
           session: Session | None, now: int, config: EngineConfig = EngineConfig()) -> Decision:
    if req.request_type == RequestType.EVENT:
        return decide_event(req, account, plan, balance, now, config)
    if req.request_type != RequestType.INITIAL and session is None:
        return Decision.error(Result.UNKNOWN_SESSION_ID, "no open credit-control session")
    if req.request_type == RequestType.INITIAL and session is not None:
        d = Decision.error(Result.INVALID_AVP_VALUE, "CCR-INITIAL for a session that is open",
                           ("CC-Request-Number", req.number))
        d.session = session                 # the open session is left as it was,
        d.keep_answer = False               # and so is the answer kept for its duplicates
        return d
    if account is None or plan is None or balance is None:
        return _end(session, account, plan, balance, req, now, config, Decision.error(
            Result.USER_UNKNOWN, "no account for the subscriber"))
    if req.context not in plan.contexts():
        return _end(session, account, plan, balance, req, now, config, Decision.error(
            Result.RATING_FAILED, f"no tariff for {req.context}", ("Service-Context-Id", req.context)))
    bad_money = check_money(req.services, account)
    if bad_money is not None:
        d = Decision.error(Result.INVALID_AVP_VALUE, bad_money, ("CC-Money", {"Unit-Value": {"Value-Digits": 0}}))
        d.session = session                 # refused before anything changed
        return d
    if session is None:
        if account.status == CLOSED:
            return Decision.error(Result.USER_UNKNOWN, "account closed")
        if account.status == SUSPENDED:
            return Decision.error(Result.END_USER_SERVICE_DENIED, "account suspended")
        session = Session(req.session_id, account.id, req.identities[0] if req.identities else "",
                          req.context, req.number, now, now, now, recent=[])
    run = Run(req, account, plan, balance, session, now, config)
    previous = session.updated_at
    terminating = req.request_type == RequestType.TERMINATION
    denied = account.status != ACTIVE and not terminating
    if terminating:
        # every reservation goes back before the final usage is charged, so usage
        # on one rating group can use what another one held
        run.release_all()
    seen: set = set()
    results = []
    for svc in req.services:
        key = service_key(svc.rating_group, svc.service_id)
        if key in seen:                     # (context, RG/SI) is unique per request (§5.1.2)
            results.append(ServiceResult(svc.rating_group, svc.service_id, Result.INVALID_AVP_VALUE))
            continue
        seen.add(key)
        results.append(run.serve(svc, not (terminating or denied), previous))
    d = Decision(services=results, multiple_services=req.multiple_services, events=run.events,
                 currency=account.currency)
    if denied:
        d.result_code = Result.USER_UNKNOWN if account.status == CLOSED else Result.END_USER_SERVICE_DENIED
        d.message = f"account {account.status}"
    else:
        failed = [r for r in results if r.result_code == Result.RATING_FAILED]
        if results and len(failed) == len(results):
            r = failed[0]
            d.result_code, d.message = Result.RATING_FAILED, "no tariff for the rating group"
            d.failed_avp = ("Rating-Group", r.rating_group) if r.rating_group is not None else (
                ("Service-Identifier", r.service_id) if r.service_id is not None
                else ("Service-Context-Id", req.context))
        elif not req.multiple_services and results and results[0].result_code != Result.SUCCESS:
            first = results[0]
            if not (first.result_code == Result.CREDIT_LIMIT_REACHED and first.final_unit is not None
                    and first.final_unit.action != "terminate"):
                d.result_code = first.result_code
            # else: no grant, FUI REDIRECT/RESTRICT with Validity-Time, session kept open
            # (RFC 8506 §5.6.3): the client restricts and asks again later
    if terminating or d.result_code != Result.SUCCESS:
        # CCR-T, or a CCR-I/U not processed OK: debit done, release, Idle (Table 6)
        for r in results:
            r.validity_time = None
        run.release_all()
        d.session_closed = True
    session.processed(req.number)
    session.updated_at = max(session.updated_at, now)
    # Tcc (RFC 8506 §13): each quota is supervised from its own grant, so a CCR-U
    # for one rating group never cuts short another's longer Validity-Time
    for r in results:
        q = session.services.get(service_key(r.rating_group, r.service_id))
        if q is not None:           # no Validity-Time: nothing of this quota is left to supervise
            q.expires = now + config.tcc_factor * r.validity_time if r.validity_time else None
    quotas = [q.expires for q in session.services.values() if q.expires is not None]
    session.expires_at = max(quotas) if quotas else now + config.tcc_factor * config.validity_time
    d.session = None if d.session_closed else session
    return d
