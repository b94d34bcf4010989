"""Credit-control requests and decisions in domain terms (no Diameter types).

`mapping.py` builds a CreditRequest from a CCR and a CCA from a Decision; the
engine only ever sees these. Result codes keep their RFC 6733/4006 numbers so
a decision reads like the answer it becomes.
"""

from __future__ import annotations

import enum

import attrs

from .model import FinalUnit
from .units import UnitType


class RequestType(enum.IntEnum):
    """CC-Request-Type (RFC 4006 §8.3)."""

    INITIAL = 1
    UPDATE = 2
    TERMINATION = 3
    EVENT = 4


class RequestedAction(enum.IntEnum):
    """Requested-Action (RFC 4006 §8.41)."""

    DIRECT_DEBITING = 0
    REFUND_ACCOUNT = 1
    CHECK_BALANCE = 2
    PRICE_ENQUIRY = 3


class Result(enum.IntEnum):
    SUCCESS = 2001
    UNKNOWN_SESSION_ID = 5002
    INVALID_AVP_VALUE = 5004
    MISSING_AVP = 5005
    UNABLE_TO_COMPLY = 5012
    END_USER_SERVICE_DENIED = 4010
    CREDIT_CONTROL_NOT_APPLICABLE = 4011
    CREDIT_LIMIT_REACHED = 4012
    USER_UNKNOWN = 5030
    RATING_FAILED = 5031


@attrs.define
class ServiceRequest:
    """One Multiple-Services-Credit-Control (or the command-level units)."""

    rating_group: int | None = None
    service_id: int | None = None
    requested: dict | None = None      # RSU as {UnitType: n}; {} = empty RSU; None = no RSU
    used: dict = attrs.Factory(dict)   # all USUs summed, {UnitType: n}


@attrs.define
class CreditRequest:
    session_id: str
    request_type: RequestType
    number: int
    context: str
    identities: list = attrs.Factory(list)      # identity keys, e.g. "e164:4670..."
    action: RequestedAction | None = None
    services: list = attrs.Factory(list)        # [ServiceRequest]
    multiple_services: bool = True              # MSCC used (else command-level units)
    event_time: int | None = None
    origin_host: str = ""                       # the client that sent it: RAR/ASR are addressed
    origin_realm: str = ""                      # to it (Destination-Host/-Realm)
    peer: str = ""                              # the connection's peer (CER Origin-Host) it came
                                                # on: RAR/ASR are sent there (a DRA, or the client)


@attrs.define
class ServiceResult:
    rating_group: int | None
    service_id: int | None
    result_code: int = Result.SUCCESS
    granted: dict | None = None                 # GSU {UnitType: n}; None = no GSU
    validity_time: int | None = None
    final_unit: FinalUnit | None = None
    quota_threshold: tuple | None = None        # (UnitType, n)
    quota_holding_time: int | None = None


@attrs.define
class Decision:
    result_code: int = Result.SUCCESS
    services: list = attrs.Factory(list)        # [ServiceResult]
    multiple_services: bool = True
    failed_avp: tuple | None = None             # (AVP name, value) for Failed-AVP
    check_balance: int | None = None            # Check-Balance-Result: 0 enough, 1 no credit
    cost: tuple | None = None                   # (minor units, currency code) Cost-Information
    events: list = attrs.Factory(list)          # rated events (dicts) to write to the outbox
    session_closed: bool = False
    session: object = None                      # the session to store (None: none or closed)
    currency: str | None = None                 # the account's currency, for CC-Money
    keep_answer: bool = True                    # store the answer for duplicates of this request
    message: str = ""                           # why, for the log

    @classmethod
    def error(cls, code: int, message: str, failed_avp: tuple | None = None) -> "Decision":
        return cls(result_code=code, message=message, failed_avp=failed_avp)


def quantity(units: dict, unit: UnitType) -> int | None:
    """The amount of `unit` in a units dict; total octets fall back to in + out."""
    n = units.get(unit)
    if n is None and unit == UnitType.TOTAL_OCTETS:
        i, o = units.get(UnitType.INPUT_OCTETS), units.get(UnitType.OUTPUT_OCTETS)
        if i is not None or o is not None:
            n = (i or 0) + (o or 0)
    return n
