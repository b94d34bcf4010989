"""Diameter <-> domain: a CCR becomes a CreditRequest, a Decision becomes a CCA.

The only module of ocs/charging that knows Diameter. The grammar was checked
before a request gets here, so required AVPs are present; what is checked
here is meaning: a CC-Request-Type outside 1..4 is 5004, an INITIAL or EVENT
request that names no subscriber is 5005 (Subscription-Id), and Used/
Requested-Service-Unit AVPs are read into {CC-Unit-Type: n}.

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
_UNIT_FIELDS = [(avp, unit) for unit, avp in UNIT_AVPS.items() if unit != UnitType.MONEY]
_EXTENSION_KINDS = {"Subscription-Id-E164": "e164", "Subscription-Id-IMSI": "imsi",
                    "Subscription-Id-SIP-URI": "sip", "Subscription-Id-NAI": "nai",
                    "Subscription-Id-Private": "private"}
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


def read_units(group) -> dict:
    out = {}
    for avp_name, unit in _UNIT_FIELDS:
        v = group.get(avp_name)
        if v is not None:
            out[unit] = v
    money = group.find("CC-Money")
    if money is not None:
        uv = money.find("Unit-Value")
        if uv is not None:
            out[UnitType.MONEY] = (uv.get("Value-Digits", 0), uv.get("Exponent", 0))
    return out


def _service(rating_group, service_id, rsu, usus, reason=None) -> ServiceRequest:
    used: dict = {}
    for usu in usus:
        for unit, n in read_units(usu).items():
            if unit == UnitType.MONEY:
                prev = used.get(unit)
                used[unit] = n if prev is None else (prev[0] + n[0], n[1]) if prev[1] == n[1] else n
            else:
                used[unit] = used.get(unit, 0) + n
    return ServiceRequest(rating_group, service_id, None if rsu is None else read_units(rsu), used,
                          reason)


def credit_request(msg: Message) -> CreditRequest:
    """The domain request of a grammar-checked CCR; RequestRefused if unusable."""
    rtype = msg.get("CC-Request-Type")
    if rtype not in (1, 2, 3, 4):
        raise RequestRefused(Result.INVALID_AVP_VALUE, f"CC-Request-Type {rtype}",
                             ("CC-Request-Type", rtype))
    rtype = RequestType(rtype)
    identities = []
    for sub in msg.find_all("Subscription-Id"):
        kind = IDENTITY_KINDS.get(sub.get("Subscription-Id-Type"))
        data = sub.get("Subscription-Id-Data")
        if kind is not None and data is not None:
            identities.append(identity_key(kind, data))
    for ext in msg.find_all("Subscription-Id-Extension"):
        for child in ext.value:
            kind = _EXTENSION_KINDS.get(child.name)
            if kind is not None:
                identities.append(identity_key(kind, child.value))
    user = msg.get("User-Name")
    if user:
        identities.append(identity_key("nai", user))
    if not identities and rtype in (RequestType.INITIAL, RequestType.EVENT):
        raise RequestRefused(Result.MISSING_AVP, "no Subscription-Id names the subscriber",
                             ("Subscription-Id", {"Subscription-Id-Type": 0,
                                                  "Subscription-Id-Data": ""}))
    action = msg.get("Requested-Action")
    mscc = msg.find_all("Multiple-Services-Credit-Control")
    if mscc:
        services = [_service(m.get("Rating-Group"), m.get("Service-Identifier"),
                             m.find("Requested-Service-Unit"), m.find_all("Used-Service-Unit"))
                    for m in mscc]
    elif (msg.find("Requested-Service-Unit") is not None or msg.find("Used-Service-Unit") is not None
          or rtype == RequestType.EVENT):
        services = [_service(None, msg.get("Service-Identifier"), msg.find("Requested-Service-Unit"),
                             msg.find_all("Used-Service-Unit"))]
        if rtype == RequestType.EVENT and services[0].requested is None:
            services[0].requested = {}
    else:
        services = []
    stamp = msg.get("Event-Timestamp")
    return CreditRequest(
        session_id=msg.get("Session-Id"), request_type=rtype, number=msg.get("CC-Request-Number"),
        context=msg.get("Service-Context-Id"), identities=identities,
        action=None if action is None else _action(action), services=services,
        multiple_services=bool(mscc) or bool(msg.get("Multiple-Services-Indicator")),
        event_time=None if stamp is None else int(stamp.timestamp()),
        termination_cause=msg.get("Termination-Cause"))


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
    if d.multiple_services:
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
