"""Diameter <-> domain: a CCR becomes a CreditRequest, a Decision becomes a CCA.

The only module of ocs/charging that knows Diameter. The grammar was checked
before a request gets here, so required AVPs are present; what is checked
here is meaning: a CC-Request-Type outside 1..4 is 5004, an INITIAL or EVENT
request that names no subscriber is 5005 (Subscription-Id), and Used/
Requested-Service-Unit AVPs are read into {CC-Unit-Type: n}. Origin-Host and
Origin-Realm become the request's `origin_host`/`origin_realm` (the client,
which a RAR/ASR for the session is addressed to); `peer`, the connection the
CCR came on (a relay agent's when a DRA is in between), is given by the caller.

CCA layout (RFC 8506 §3.2, TS 32.299 §6.4.3): Session-Id, Result-Code,
Origin-Host, Origin-Realm, Auth-Application-Id, CC-Request-Type,
CC-Request-Number, then CC-Session-Failover (sessions live in the shared
store, so another server may continue them), one MSCC per service of the
request (Granted-Service-Unit, Rating-Group, Service-Identifier,
Validity-Time, Result-Code, Final-Unit-Indication, quota threshold and
Quota-Holding-Time) or the same at command level when the request used no
MSCC, then Cost-Information, Check-Balance-Result and Failed-AVP.
"""

from __future__ import annotations

from ..diameter.message import Message
from .model import IDENTITY_KINDS, FinalUnit, identity_key
from .requests import CreditRequest, Decision, RequestType, Result, ServiceRequest, ServiceResult
from .units import UNIT_AVPS, UnitType, currency

AUTH_APPLICATION_ID = 4
_FUI_ACTIONS = {"terminate": 0, "redirect": 1, "restrict_access": 2}
_THRESHOLDS = {UnitType.TIME: "Time-Quota-Threshold", UnitType.TOTAL_OCTETS: "Volume-Quota-Threshold",
               UnitType.INPUT_OCTETS: "Volume-Quota-Threshold",
               UnitType.OUTPUT_OCTETS: "Volume-Quota-Threshold",
               UnitType.SERVICE_SPECIFIC_UNITS: "Unit-Quota-Threshold"}


class RequestRefused(Exception):
    """A CCR that is well-formed but unusable: answered with this code."""

    def __init__(self, result_code: int, message: str, failed_avp: tuple):
        super().__init__(message)
        self.result_code, self.failed_avp = result_code, failed_avp


# RFC 6733 / 4006 AVP codes (all vendor 0) read by the one-pass reader below
SESSION_ID, ORIGIN_HOST, ORIGIN_REALM, USER_NAME, EVENT_TIMESTAMP = 263, 264, 296, 1, 55
CC_REQUEST_NUMBER, CC_REQUEST_TYPE, SERVICE_CONTEXT_ID = 415, 416, 461
SUBSCRIPTION_ID, SUBSCRIPTION_ID_DATA, SUBSCRIPTION_ID_TYPE = 443, 444, 450
SUBSCRIPTION_ID_EXTENSION, REQUESTED_ACTION = 659, 436
MSCC, RSU, USU, RATING_GROUP, SERVICE_IDENTIFIER = 456, 437, 446, 432, 439
CC_MONEY, UNIT_VALUE, VALUE_DIGITS, EXPONENT = 413, 445, 447, 429
CURRENCY_CODE = 425
LIMIT = 1 << 62            # largest quantity accepted in a unit AVP (and in a sum of them)
EXPONENT_LIMIT = 18        # |Exponent| of a Unit-Value: 10^18 is beyond any real amount
_UNIT_CODES = {420: UnitType.TIME, 421: UnitType.TOTAL_OCTETS, 412: UnitType.INPUT_OCTETS,
               414: UnitType.OUTPUT_OCTETS, 417: UnitType.SERVICE_SPECIFIC_UNITS}
_EXTENSION_CODES = {660: "e164", 661: "imsi", 662: "sip", 663: "nai", 664: "private"}


def _refuse(name: str, value, why: str) -> RequestRefused:
    return RequestRefused(Result.INVALID_AVP_VALUE, f"{name} {value}: {why}", (name, value))


def read_units(group) -> dict:
    """{CC-Unit-Type: n} of a Requested/Used/Granted-Service-Unit AVP; money as
    (Value-Digits, Exponent, Currency-Code or None). Values that no tariff could
    rate (above 2^62, negative money, |Exponent| > 18) are refused with 5004."""
    out = {}
    for a in group.value:
        if a.vendor:
            continue
        unit = _UNIT_CODES.get(a.code)
        if unit is not None:
            n = a.value
            if n > LIMIT:
                raise _refuse(a.name, n, "more than 2^62 units")
            out[unit] = n
        elif a.code == CC_MONEY:
            digits = exponent = 0
            code = None
            for uv in a.value:
                if uv.vendor:
                    continue
                if uv.code == UNIT_VALUE:
                    for x in uv.value:
                        if x.code == VALUE_DIGITS and not x.vendor:
                            digits = x.value
                        elif x.code == EXPONENT and not x.vendor:
                            exponent = x.value
                elif uv.code == CURRENCY_CODE:
                    code = uv.value
            if not 0 <= digits <= LIMIT:
                raise _refuse("Value-Digits", digits, "money must be 0..2^62")
            if not -EXPONENT_LIMIT <= exponent <= EXPONENT_LIMIT:
                raise _refuse("Exponent", exponent, f"outside -{EXPONENT_LIMIT}..{EXPONENT_LIMIT}")
            out[UnitType.MONEY] = (digits, exponent, code)
    return out


def _add_used(used: dict, units: dict) -> None:
    """Sum the units of several USUs (money brought to the smaller exponent)."""
    for unit, n in units.items():
        prev = used.get(unit)
        if prev is None:
            used[unit] = n
        elif unit == UnitType.MONEY:
            if prev[2] != n[2]:
                raise _refuse("Currency-Code", n[2], "USUs in different currencies")
            e = min(prev[1], n[1])
            total = prev[0] * 10 ** (prev[1] - e) + n[0] * 10 ** (n[1] - e)
            if total > LIMIT:
                raise _refuse("Value-Digits", total, "money reported exceeds 2^62")
            used[unit] = (total, e, n[2])
        else:
            if prev + n > LIMIT:
                raise _refuse(UNIT_AVPS[unit], n, "the USUs add up to more than 2^62 units")
            used[unit] = prev + n


def _service(avps, rating_group=None, service_id=None) -> ServiceRequest:
    """A ServiceRequest from the children of an MSCC (or the command level)."""
    svc = ServiceRequest(rating_group, service_id, None, {})
    for a in avps:
        if a.vendor:
            continue
        c = a.code
        if c == RSU:
            if svc.requested is None:
                svc.requested = read_units(a)
        elif c == USU:
            _add_used(svc.used, read_units(a))
        elif c == RATING_GROUP:
            svc.rating_group = a.value
        elif c == SERVICE_IDENTIFIER and svc.service_id is None:
            svc.service_id = a.value
    return svc


def credit_request(msg: Message, peer: str = "") -> CreditRequest:
    """The domain request of a grammar-checked CCR; RequestRefused if unusable.
    `peer`: the Origin-Host (from its CER) of the connection the CCR came on."""
    session_id = context = action = stamp = user = None
    origin_host = origin_realm = ""
    rtype = number = None
    identities: list = []
    mscc: list = []
    command_units = False
    for a in msg.avps:
        if a.vendor:
            continue
        c = a.code
        if c == MSCC:
            mscc.append(_service(a.value))
        elif c == SESSION_ID:
            session_id = a.value
        elif c == ORIGIN_HOST:
            origin_host = a.value
        elif c == ORIGIN_REALM:
            origin_realm = a.value
        elif c == CC_REQUEST_TYPE:
            rtype = a.value
        elif c == CC_REQUEST_NUMBER:
            number = a.value
        elif c == SERVICE_CONTEXT_ID:
            context = a.value
        elif c == SUBSCRIPTION_ID:
            kind = data = None
            for x in a.value:
                if x.code == SUBSCRIPTION_ID_TYPE and not x.vendor:
                    kind = IDENTITY_KINDS.get(x.value)
                elif x.code == SUBSCRIPTION_ID_DATA and not x.vendor:
                    data = x.value
            if kind is not None and data is not None:
                identities.append(identity_key(kind, data))
        elif c == SUBSCRIPTION_ID_EXTENSION:
            for x in a.value:
                kind = _EXTENSION_CODES.get(x.code) if not x.vendor else None
                if kind is not None:
                    identities.append(identity_key(kind, x.value))
        elif c == REQUESTED_ACTION:
            action = a.value
        elif c in (RSU, USU):
            command_units = True
        elif c == USER_NAME:
            user = a.value
        elif c == EVENT_TIMESTAMP:
            stamp = a.value
    if rtype not in (1, 2, 3, 4):
        raise RequestRefused(Result.INVALID_AVP_VALUE, f"CC-Request-Type {rtype}",
                             ("CC-Request-Type", rtype))
    rtype = RequestType(rtype)
    if user:
        identities.append(identity_key("nai", user))
    if not identities and rtype in (RequestType.INITIAL, RequestType.EVENT):
        raise RequestRefused(Result.MISSING_AVP, "no Subscription-Id names the subscriber",
                             ("Subscription-Id", {"Subscription-Id-Type": 0,
                                                  "Subscription-Id-Data": ""}))
    if mscc:
        services = mscc
    elif command_units or rtype == RequestType.EVENT:
        services = [_service(msg.avps)]
        if rtype == RequestType.EVENT and services[0].requested is None:
            services[0].requested = {}
    else:
        services = []
    return CreditRequest(
        session_id=session_id, request_type=rtype, number=number, context=context,
        identities=identities, action=None if action is None else _action(action),
        services=services, multiple_services=bool(mscc),
        event_time=None if stamp is None else int(stamp.timestamp()), origin_host=origin_host,
        origin_realm=origin_realm, peer=peer)


def _action(value: int):
    from .requests import RequestedAction
    try:
        return RequestedAction(value)
    except ValueError:
        raise RequestRefused(Result.INVALID_AVP_VALUE, f"Requested-Action {value}",
                             ("Requested-Action", value)) from None


def _units_avp(units: dict, account_currency: str | None) -> dict:
    out = {}
    for unit, n in units.items():
        if unit == UnitType.MONEY:
            code, exp = currency(account_currency or "EUR")
            out["CC-Money"] = {"Unit-Value": {"Value-Digits": n, "Exponent": -exp},
                               "Currency-Code": code}
        else:
            out[UNIT_AVPS[unit]] = n
    return out


def _fui(fu: FinalUnit) -> dict:
    out: dict = {"Final-Unit-Action": _FUI_ACTIONS[fu.action]}
    if fu.restriction_rules:
        out["Restriction-Filter-Rule"] = list(fu.restriction_rules)
    if fu.filter_ids:
        out["Filter-Id"] = list(fu.filter_ids)
    if fu.action == "redirect":
        out["Redirect-Server"] = {"Redirect-Address-Type": fu.redirect_type,
                                  "Redirect-Server-Address": fu.redirect_address}
    return out


def _quota_avps(r: ServiceResult, currency_code: str | None, into: list) -> None:
    if r.granted is not None:
        into.append(("Granted-Service-Unit", _units_avp(r.granted, currency_code)))
    if r.validity_time is not None:
        into.append(("Validity-Time", r.validity_time))
    if r.final_unit is not None:
        into.append(("Final-Unit-Indication", _fui(r.final_unit)))


def _mscc(r: ServiceResult, currency_code: str | None) -> list:
    out: list = []
    _quota_avps(r, currency_code, out)
    if r.rating_group is not None:
        out.append(("Rating-Group", r.rating_group))
    if r.service_id is not None:
        out.append(("Service-Identifier", r.service_id))
    out.append(("Result-Code", int(r.result_code)))
    if r.quota_threshold is not None:
        unit, n = r.quota_threshold
        out.append((_THRESHOLDS.get(unit, "Unit-Quota-Threshold"), n))
    if r.quota_holding_time is not None:
        out.append(("Quota-Holding-Time", r.quota_holding_time))
    return out


def answer(request: Message, d: Decision, origin_host: str, origin_realm: str) -> Message:
    """The CCA for a decision (or for a refusal: Decision.error)."""
    ans = request.answer()
    currency_code = d.currency
    avps: list = [("Result-Code", int(d.result_code)), ("Origin-Host", origin_host),
                  ("Origin-Realm", origin_realm), ("Auth-Application-Id", AUTH_APPLICATION_ID),
                  ("CC-Request-Type", request.get("CC-Request-Type")),
                  ("CC-Request-Number", request.get("CC-Request-Number"))]
    rtype = request.get("CC-Request-Type")
    if d.result_code == Result.SUCCESS and rtype in (1, 2):
        avps.append(("CC-Session-Failover", 1))
    if d.result_code != Result.SUCCESS:
        pass        # a failed command-level Result-Code overrides every MSCC (RFC 8506 §5.1.2)
    elif d.multiple_services:
        avps.extend(("Multiple-Services-Credit-Control", _mscc(r, currency_code)) for r in d.services)
    elif d.services:
        _quota_avps(d.services[0], currency_code, avps)
    if d.cost is not None:
        amount, code = d.cost
        num, exp = currency(code)
        avps.append(("Cost-Information", {"Unit-Value": {"Value-Digits": amount, "Exponent": -exp},
                                          "Currency-Code": num}))
    if d.check_balance is not None:
        avps.append(("Check-Balance-Result", d.check_balance))
    if d.failed_avp is not None:
        name, value = d.failed_avp
        avps.append(("Failed-AVP", [(name, value)]))
    return ans.extend(avps)
