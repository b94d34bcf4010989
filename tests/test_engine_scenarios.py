"""The pure charging engine as a table of scenarios.

Each scenario names a price plan (written the way provisioning writes it, via
`plan_from_dict`), the account's starting buckets, and a sequence of steps:
one credit-control request (or a top-up / bucket prune between requests) and
the exact integer outcome expected after it: command and per-MSCC result
codes, granted units, Final-Unit-Indication, Validity-Time, every bucket's
amount and reservation, every rated event's amount and unpaid part.

Every expected number is worked out by hand from the rules documented in
ocs/charging/rating.py, balance.py, quota.py and engine.py (and RFC 8506 as
summarised in /work/shared/reference/diameter.md B.11.4-B.11.10); the
comments next to the numbers show the arithmetic. Nothing here calls the
rating code to compute an expectation.

After every step the runner also checks invariants that hold whatever the
scenario: money is conserved (money bucket amounts + money debited by rated
events + money forfeited by pruning expired buckets == starting money +
top-ups), each event's money impacts add up to its amount, no reservation is
negative, each bucket's reservation equals what the open session holds in it,
and no bucket goes below zero (the main bucket: below minus the credit limit).

Between steps the balance and session go through their stored JSON encoding,
as the ledger does, so state that does not survive storage shows up here too.

Scenarios marked xfail(strict=True) describe behaviour believed to be a bug
in the engine (see the reason); they are expected to fail until it is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocs.charging import balance as bal
from ocs.charging.engine import decide
from ocs.charging.model import Account, Balance, Bucket
from ocs.charging.quota import EngineConfig
from ocs.charging.records import (decode_balance, decode_plan, decode_session, encode_balance,
                                  encode_plan, encode_session, plan_from_dict)
from ocs.charging.requests import CreditRequest, RequestedAction, RequestType, ServiceRequest
from ocs.charging.units import UnitType

PS = "32251@3gpp.org"           # Gy / PS data
IMS = "32260@3gpp.org"          # Ro / IMS voice
EV = "ev-charging@example.net"  # EV charging, service-specific units = Wh
IDENTITY = "e164:46700000001"
CONFIG = EngineConfig()         # Validity-Time 600 when a tariff sets none, Tcc = 2 x VT

TIME, OCTETS, SSU, MONEY = (UnitType.TIME, UnitType.TOTAL_OCTETS,
                            UnitType.SERVICE_SPECIFIC_UNITS, UnitType.MONEY)
IN_OCTETS, OUT_OCTETS = UnitType.INPUT_OCTETS, UnitType.OUTPUT_OCTETS

OK, DENIED, LIMIT, RATING, UNKNOWN_USER, NO_SESSION, INVALID, MISSING = (
    2001, 4010, 4012, 5031, 5030, 5002, 5004, 5005)
DD, REFUND, CHECK, PRICE = (RequestedAction.DIRECT_DEBITING, RequestedAction.REFUND_ACCOUNT,
                            RequestedAction.CHECK_BALANCE, RequestedAction.PRICE_ENQUIRY)
_ANY = object()


# -- plans ---------------------------------------------------------------------

def voice(plan_id="voice", utc_offset=0, **tariff):
    """IMS voice: 2 cents a second, default quota 300 s (600 cents)."""
    t = {"context": IMS, "unit": "time", "price": 2, "default_quota": 300, **tariff}
    return {"id": plan_id, "currency": "EUR", "utc_offset_minutes": utc_offset, "tariffs": [t]}


def data(rgs=(10,), plan_id="data", **tariff):
    """PS data, one tariff per rating group: 1 cent per 100 octets, default
    quota 1000 octets (10 cents)."""
    return {"id": plan_id, "currency": "EUR", "tariffs": [
        {"context": PS, "unit": "total_octets", "rating_group": rg, "price": 1, "per": 100,
         "default_quota": 1000, **tariff} for rg in rgs]}


BANDS = [{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00", "price": 10},   # weekday peak
         {"days": [0], "start": "00:00", "end": "06:00", "price": 1}]                # Monday night
# UTC+2; outside a band 4 cents a second
BANDED = voice("banded", utc_offset=120, price=4, default_quota=100, bands=BANDS)

EV_PLAN = {"id": "ev", "tariffs": [{
    "context": EV, "unit": "service_specific_units", "price": 30, "per": 1000,  # 30 c/kWh
    "default_quota": 20000, "idle_price_per_minute": 50, "idle_grace": 600}]}

# epoch seconds; 1970-01-01 was a Thursday. Local = UTC+2 in BANDED.
THU_0200L = 0              # Thu 02:00 local
THU_0900L = 25200          # Thu 07:00 UTC
FRI_0900L = 111600
SAT_0900L = 198000
SUN_0900L = 284400
MON_0130L = 343800         # Sun 1970-01-04 23:30 UTC = Mon 01:30 local
MON_0559L = 359940
MON_0600L = 360000
MON_0800L = 367200
MON_0900L = 370800
MON_1800L = 403200
MON_1930L = 408600         # 17:30 UTC: peak in UTC, off-peak locally
WED_0900L = 543600


# -- scenario shapes -----------------------------------------------------------

@dataclass(frozen=True)
class Svc:
    """One MSCC of a request. rsu: None = no RSU, {} = empty RSU, int = that many
    units of the scenario's unit, dict = as given. usu likewise (None = no USU)."""

    rg: int | None = None
    rsu: object = None
    usu: object = None
    sid: int | None = None


@dataclass(frozen=True)
class Q:
    """Expected ServiceResult: MSCC result code, GSU units (None = no GSU), FUI
    action (None = no FUI), Validity-Time (None = none)."""

    rc: int = OK
    gsu: int | None = None
    fui: str | None = None
    vt: int | None = None
    redirect: object = _ANY          # Redirect-Server-Address when given
    filter_ids: object = _ANY
    threshold: object = _ANY         # (UnitType, n)
    holding: object = _ANY


@dataclass
class Step:
    kind: str                        # I U T E (request types) or "prune" (no request)
    n: int = 0
    now: int = 0
    svcs: tuple = ()
    # request modifiers
    action: RequestedAction | None = None
    event_time: int | None = None
    context: str | None = None
    single: bool = False             # command-level units, no MSCC
    status: str | None = None        # set the account status before the request
    missing_account: bool = False    # no account, plan or balance found
    topup: int = 0                   # credit the main bucket before the request
    prune: bool = False              # bal.prune after the request (as the ledger does)
    # expectations
    rc: int = OK
    q: tuple = ()
    buckets: dict | None = None      # {bucket id: (amount, reserved)}: exactly these buckets
    events: tuple = ()               # (type, amount, unpaid[, {key: value}])
    closed: bool | None = None       # Decision.session_closed (default: kind == "T")
    open: bool | None = None         # Decision.session stored (default: I/U and not closed)
    failed_avp: tuple | None = None
    cost: tuple | None = None
    check_balance: int | None = None
    expires: int | None = None


@dataclass
class Scenario:
    name: str
    plan: dict
    buckets: list                    # [(id, kind, amount[, reserved, priority, expires, rgs])]
    steps: list
    unit: UnitType = TIME
    context: str = IMS
    credit_limit: int = 0
    bug: str | None = None           # xfail(strict) reason


def B(id, kind, amount, priority=100, expires=None, rgs=None):
    return (id, kind, amount, 0, priority, expires, rgs)


MAIN = lambda amount: ("main", "money", amount, 0, 1 << 30, None, None)  # noqa: E731


# -- the table -------------------------------------------------------------------

SCENARIOS = [
    Scenario("grant_full_voice", voice(), [MAIN(10000)], [
        # 120 s x 2 = 240 reserved; 9760 left, so not final
        Step("I", 0, 1000, (Svc(1, rsu=120),), q=(Q(OK, 120, None, 600),),
             buckets={"main": (10000, 240)}, expires=1000 + 2 * 600),
        # release 240, debit 100 s x 2 = 200, reserve 240 again
        Step("U", 1, 1100, (Svc(1, rsu=120, usu=100),), q=(Q(OK, 120, None, 600),),
             buckets={"main": (9800, 240)},
             events=(("usage", 200, 0, {"start": 1000, "end": 1100, "units": {"time": 100},
                                        "rating_group": 1, "request_number": 1,
                                        "impacts": [["main", -200]]}),)),
        # empty RSU: default quota 300 s = 600 cents
        Step("U", 2, 1200, (Svc(1, rsu={}, usu=120),), q=(Q(OK, 300, None, 600),),
             buckets={"main": (9560, 600)}, events=(("usage", 240, 0),)),
        Step("T", 3, 1300, (Svc(1, usu=50),), q=(Q(),), buckets={"main": (9460, 0)},
             events=(("usage", 100, 0),)),
    ]),

    Scenario("grant_full_data_threshold_in_plus_out", data(
        validity_time=900, quota_threshold=200, quota_holding_time=30),
        [MAIN(1000)], [
        Step("I", 0, 0, (Svc(10, rsu=1000),),
             q=(Q(OK, 1000, None, 900, threshold=(OCTETS, 200), holding=30),),
             buckets={"main": (1000, 10)}, expires=1800),
        # USU only as input + output octets: 300 + 200 = 500 octets = 5 cents
        Step("U", 1, 100, (Svc(10, rsu=1000, usu={IN_OCTETS: 300, OUT_OCTETS: 200}),),
             q=(Q(OK, 1000, None, 900, threshold=(OCTETS, 200), holding=30),),
             buckets={"main": (995, 10)},
             events=(("usage", 5, 0, {"units": {"total_octets": 500}}),)),
        # 150 octets -> ceil(150 / 100) = 2 cents
        Step("T", 2, 200, (Svc(10, usu=150),), q=(Q(),), buckets={"main": (993, 0)},
             events=(("usage", 2, 0),)),
    ], unit=OCTETS, context=PS),

    Scenario("partial_grant_then_4012", data(), [MAIN(6)], [
        # default 1000 octets would cost 10 > 6: most affordable is 600 octets (6 cents)
        Step("I", 0, 0, (Svc(10, rsu={}),), q=(Q(OK, 600, "terminate", 600),),
             buckets={"main": (6, 6)}),
        Step("U", 1, 300, (Svc(10, rsu={}, usu=600),), q=(Q(LIMIT, None, "terminate", None),),
             buckets={"main": (0, 0)}, events=(("usage", 6, 0),), expires=300 + 1200),
        Step("T", 2, 400, (Svc(10),), q=(Q(),), buckets={"main": (0, 0)}),
    ], unit=OCTETS, context=PS),

    Scenario("exhaustion_mid_session", data(), [MAIN(20)], [
        Step("I", 0, 0, (Svc(10, rsu={}),), q=(Q(OK, 1000, None, 600),),
             buckets={"main": (20, 10)}),
        # the full default quota still fits, but nothing is left after it: FUI
        Step("U", 1, 100, (Svc(10, rsu={}, usu=1000),), q=(Q(OK, 1000, "terminate", 600),),
             buckets={"main": (10, 10)}, events=(("usage", 10, 0),)),
        Step("U", 2, 200, (Svc(10, rsu={}, usu=1000),), q=(Q(LIMIT, None, "terminate", None),),
             buckets={"main": (0, 0)}, events=(("usage", 10, 0),)),
        Step("T", 3, 300, (Svc(10, usu=0),), q=(Q(),), buckets={"main": (0, 0)}),
    ], unit=OCTETS, context=PS),

    Scenario("fui_redirect_then_topup", data(
        final_unit={"action": "redirect", "redirect_address": "http://topup.example.net/"},
        restricted_validity_time=120), [MAIN(6)], [
        Step("I", 0, 0, (Svc(10, rsu={}),),
             q=(Q(OK, 600, "redirect", 600, redirect="http://topup.example.net/"),),
             buckets={"main": (6, 6)}),
        # final units used: CCR-U without RSU -> debit, no GSU, VT = restricted_validity_time
        Step("U", 1, 400, (Svc(10, usu=600),), q=(Q(OK, None, None, 120),),
             buckets={"main": (0, 0)}, events=(("usage", 6, 0),), expires=400 + 2 * 120),
        # VT over, still empty: 4012 with the redirect FUI
        Step("U", 2, 520, (Svc(10, rsu={}),),
             q=(Q(LIMIT, None, "redirect", 120, redirect="http://topup.example.net/"),),
             buckets={"main": (0, 0)}, expires=520 + 2 * 120),
        # topped up by 20: a new full grant lifts the restriction
        Step("U", 3, 530, (Svc(10, rsu={}),), topup=20, q=(Q(OK, 1000, None, 600),),
             buckets={"main": (20, 10)}),
        Step("T", 4, 600, (Svc(10, usu=250),), q=(Q(),), buckets={"main": (17, 0)},
             events=(("usage", 3, 0),)),
    ], unit=OCTETS, context=PS),

    Scenario("fui_restrict_access", voice(
        final_unit={"action": "restrict_access", "filter_ids": ["restricted"],
                    "restriction_rules": ["permit out ip from any to 10.0.0.1"]},
        restricted_validity_time=60), [MAIN(100)], [
        # 300 s would cost 600: 50 s (100 cents) granted with RESTRICT_ACCESS
        Step("I", 0, 0, (Svc(1, rsu={}),),
             q=(Q(OK, 50, "restrict_access", 600, filter_ids=("restricted",)),),
             buckets={"main": (100, 100)}),
        Step("U", 1, 60, (Svc(1, usu=50),), q=(Q(OK, None, None, 60),),
             buckets={"main": (0, 0)}, events=(("usage", 100, 0),), expires=60 + 120),
        Step("T", 2, 100, (), buckets={"main": (0, 0)}),
    ]),

    Scenario("over_use_records_unpaid", voice(), [MAIN(400)], [
        Step("I", 0, 0, (Svc(1, rsu={}),), q=(Q(OK, 200, "terminate", 600),),
             buckets={"main": (400, 400)}),
        # used 300 s of a 200 s grant: 600 due, 400 available -> 400 debited, 200 unpaid
        Step("U", 1, 300, (Svc(1, rsu={}, usu=300),), q=(Q(LIMIT, None, "terminate", None),),
             buckets={"main": (0, 0)},
             events=(("usage", 400, 200, {"impacts": [["main", -400]]}),)),
        Step("T", 2, 310, (Svc(1, usu=5),), q=(Q(),), buckets={"main": (0, 0)},
             events=(("usage", 0, 10, {"impacts": []}),)),
    ]),

    Scenario("credit_limit_negative_main", voice(), [MAIN(100)], [
        # room 100 + 700 = 800 >= 600: full grant, 200 of room left
        Step("I", 0, 0, (Svc(1, rsu={}),), q=(Q(OK, 300, None, 600),),
             buckets={"main": (100, 600)}),
        # 600 debited -> -500; room -500 + 700 = 200 -> 100 s
        Step("U", 1, 300, (Svc(1, rsu={}, usu=300),), q=(Q(OK, 100, "terminate", 600),),
             buckets={"main": (-500, 200)}, events=(("usage", 600, 0),)),
        # 150 s = 300 due, room 200: main stops at -700, 100 unpaid
        Step("U", 2, 400, (Svc(1, rsu={}, usu=150),), q=(Q(LIMIT, None, "terminate", None),),
             buckets={"main": (-700, 0)}, events=(("usage", 200, 100),)),
        Step("T", 3, 410, (), buckets={"main": (-700, 0)}),
    ], credit_limit=700),

    Scenario("refund_account", voice(), [MAIN(1000)], [
        # 60 s at 2 = 120 credited; GSU = the units refunded
        Step("E", 0, 500, (Svc(1, rsu=60),), action=REFUND, q=(Q(OK, 60),),
             buckets={"main": (1120, 0)},
             events=(("refund", -120, 0, {"impacts": [["main", 120]], "request_type": 4}),)),
        # CC-Money 250 x 10^-2 EUR = 250 cents refunded instead of the price
        Step("E", 0, 510, (Svc(1, rsu={TIME: 60, MONEY: (250, -2)}),), action=REFUND,
             q=(Q(OK, 60),), buckets={"main": (1370, 0)}, events=(("refund", -250, 0),)),
        # a suspended account may still be refunded
        Step("E", 0, 520, (Svc(1, rsu=10),), action=REFUND, status="suspended",
             q=(Q(OK, 10),), buckets={"main": (1390, 0)}, events=(("refund", -20, 0),)),
    ]),

    Scenario("price_enquiry", voice(), [MAIN(1000)], [
        Step("E", 0, 10, (Svc(1, rsu=90),), action=PRICE, q=(Q(),), cost=(180, "EUR"),
             buckets={"main": (1000, 0)}),
        # no units asked: the default quota, 300 s
        Step("E", 0, 20, (Svc(1, rsu={}),), action=PRICE, q=(Q(),), cost=(600, "EUR"),
             buckets={"main": (1000, 0)}),
        # more than the balance: still just a price, nothing changes
        Step("E", 0, 30, (Svc(1, rsu=1000),), action=PRICE, q=(Q(),), cost=(2000, "EUR"),
             buckets={"main": (1000, 0)}),
        Step("E", 0, 40, (Svc(1, rsu=5),), action=PRICE, status="suspended", q=(Q(),),
             cost=(10, "EUR"), buckets={"main": (1000, 0)}),
    ]),

    Scenario("price_enquiry_two_rating_groups", data(rgs=(10, 20)), [MAIN(0)], [
        # 500 octets = 5, 1500 octets = 15, summed
        Step("E", 0, 0, (Svc(10, rsu=500), Svc(20, rsu=1500)), action=PRICE, q=(Q(), Q()),
             cost=(20, "EUR"), buckets={"main": (0, 0)}),
    ], unit=OCTETS, context=PS),

    Scenario("check_balance", voice(), [MAIN(100)], [
        Step("E", 0, 0, (Svc(1, rsu=50),), action=CHECK, q=(Q(),), check_balance=0,
             buckets={"main": (100, 0)}),
        Step("E", 0, 0, (Svc(1, rsu=51),), action=CHECK, q=(Q(),), check_balance=1,
             buckets={"main": (100, 0)}),
    ]),

    Scenario("check_balance_with_credit_limit", voice(), [MAIN(-50)], [
        # room -50 + 200 = 150 -> 75 s affordable
        Step("E", 0, 0, (Svc(1, rsu=75),), action=CHECK, q=(Q(),), check_balance=0,
             buckets={"main": (-50, 0)}),
        Step("E", 0, 0, (Svc(1, rsu=76),), action=CHECK, q=(Q(),), check_balance=1,
             buckets={"main": (-50, 0)}),
    ], credit_limit=200),

    Scenario("direct_debit", voice(), [MAIN(100), B("mins", "time", 30)], [
        # 40 s: 30 from the minutes allowance, 10 s x 2 = 20 cents from money
        Step("E", 0, 10, (Svc(1, rsu=40),), action=DD, q=(Q(OK, 40),),
             buckets={"main": (80, 0), "mins": (0, 0)},
             events=(("direct_debit", 20, 0, {"impacts": [["mins", -30], ["main", -20]],
                                               "units": {"time": 40}}),)),
        # 50 s would cost 100 > 80: 4012, nothing debited (MSCC result, command 2001)
        Step("E", 0, 20, (Svc(1, rsu=50),), action=DD, q=(Q(LIMIT, None, "terminate"),),
             buckets={"main": (80, 0), "mins": (0, 0)}),
        # the same without MSCC: command-level 4012
        Step("E", 0, 30, (Svc(None, rsu=50),), action=DD, single=True, rc=LIMIT,
             q=(Q(LIMIT, None, "terminate"),), buckets={"main": (80, 0), "mins": (0, 0)}),
        # exactly affordable: 40 s = 80
        Step("E", 0, 40, (Svc(None, rsu=40),), action=DD, single=True, q=(Q(OK, 40),),
             buckets={"main": (0, 0), "mins": (0, 0)}, events=(("direct_debit", 80, 0),)),
    ]),

    Scenario("events_on_suspended_account", voice(), [MAIN(1000)], [
        Step("E", 0, 0, (Svc(1, rsu=10),), action=DD, status="suspended", rc=DENIED,
             buckets={"main": (1000, 0)}),
        Step("E", 0, 0, (Svc(1, rsu=10),), action=CHECK, rc=DENIED, buckets={"main": (1000, 0)}),
        Step("E", 0, 0, (Svc(1, rsu=10),), action=None, rc=MISSING,
             failed_avp=("Requested-Action", 0), buckets={"main": (1000, 0)}),
    ]),

    Scenario("bucket_expiry", data(), [
        MAIN(1000),
        B("bonus", "money", 100, priority=10, expires=1000),
        B("pack", "total_octets", 2000, expires=500)], [
        # allowance first: 1000 octets reserved in the pack
        Step("I", 0, 0, (Svc(10, rsu={}),), q=(Q(OK, 1000, None, 600),),
             buckets={"main": (1000, 0), "bonus": (100, 0), "pack": (2000, 1000)}),
        # the pack expired at 500: its reservation is released, but the 1000 octets
        # are paid with money (bonus first, priority 10); the new grant too
        Step("U", 1, 600, (Svc(10, rsu={}, usu=1000),), prune=True, q=(Q(OK, 1000, None, 600),),
             buckets={"main": (1000, 0), "bonus": (90, 10)},
             events=(("usage", 10, 0, {"impacts": [["bonus", -10]]}),)),
        # bonus expired at 1000 but still holds 10 reserved: not pruned yet
        Step("prune", now=1100, buckets={"main": (1000, 0), "bonus": (90, 10)}, open=True),
        # release on the expired bonus works; money now comes from main; the
        # emptied (of reservations) expired bonus is pruned, its 90 forfeited
        Step("U", 2, 1200, (Svc(10, rsu={}, usu=1000),), prune=True, q=(Q(OK, 1000, None, 600),),
             buckets={"main": (990, 10)},
             events=(("usage", 10, 0, {"impacts": [["main", -10]]}),)),
        Step("T", 3, 1300, (Svc(10, usu=400),), q=(Q(),), buckets={"main": (986, 0)},
             events=(("usage", 4, 0),)),
    ], unit=OCTETS, context=PS),

    Scenario("expired_allowance_never_granted", voice(), [
        MAIN(1000), B("mins", "time", 500, expires=100)], [
        # at 100 the minutes have expired: the grant is bought with money
        Step("I", 0, 100, (Svc(1, rsu=60),), prune=True, q=(Q(OK, 60, None, 600),),
             buckets={"main": (1000, 120)}),
        Step("T", 1, 200, (Svc(1, usu=60),), q=(Q(),), buckets={"main": (880, 0)},
             events=(("usage", 120, 0),)),
    ]),

    Scenario("allowances_before_money_rating_group_limited", data(rgs=(10, 20)), [
        MAIN(1000),
        B("a1", "total_octets", 500, priority=100, rgs=(10,)),
        B("a2", "total_octets", 300, priority=50)], [
        # RG10: a2 (priority 50) 300 + a1 500 = 800 allowance + 200 octets bought (2)
        # RG20: a1 is not for it, a2 fully reserved: 1000 bought (10)
        Step("I", 0, 0, (Svc(10, rsu={}), Svc(20, rsu={})),
             q=(Q(OK, 1000, None, 600), Q(OK, 1000, None, 600)),
             buckets={"main": (1000, 12), "a1": (500, 500), "a2": (300, 300)}),
        # RG10 used 900: 300 from a2, 500 from a1, 100 octets (1 cent) from money;
        # RG20 used 400 with no allowance left: 4 cents, no RSU so no grant
        Step("U", 1, 100, (Svc(10, rsu={}, usu=900), Svc(20, usu=400)),
             q=(Q(OK, 1000, None, 600), Q()),
             buckets={"main": (995, 10), "a1": (0, 0), "a2": (0, 0)},
             events=(("usage", 1, 0, {"impacts": [["a2", -300], ["a1", -500], ["main", -1]],
                                      "rating_group": 10}),
                     ("usage", 4, 0, {"impacts": [["main", -4]], "rating_group": 20}))),
        Step("T", 2, 200, (Svc(10, usu=1000), Svc(20)), q=(Q(), Q()),
             buckets={"main": (985, 0), "a1": (0, 0), "a2": (0, 0)},
             events=(("usage", 10, 0),)),
    ], unit=OCTETS, context=PS),

    Scenario("free_units_per_session", voice(free_units=60), [MAIN(1000)], [
        # 60 s free + 40 s x 2 = 80 reserved
        Step("I", 0, 0, (Svc(1, rsu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (1000, 80)}),
        Step("U", 1, 100, (Svc(1, rsu=100, usu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (920, 200)}, events=(("usage", 80, 0),)),
        Step("T", 2, 200, (Svc(1, usu=30),), q=(Q(),), buckets={"main": (860, 0)},
             events=(("usage", 60, 0),)),
        # a new session gets the free minute again
        Step("I", 0, 300, (Svc(1, rsu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (860, 80)}),
        Step("T", 1, 400, (Svc(1, usu=70),), q=(Q(),), buckets={"main": (840, 0)},
             events=(("usage", 20, 0),)),
    ]),

    Scenario("tiers_cumulative_over_session", {"id": "tiered", "tariffs": [{
        "context": PS, "unit": "total_octets", "rating_group": 10, "price": 10, "per": 1000,
        "default_quota": 4000, "tiers": [{"from_units": 0, "price": 10},
                                         {"from_units": 5000, "price": 4}]}]},
        [MAIN(1000)], [
        Step("I", 0, 0, (Svc(10, rsu={}),), q=(Q(OK, 4000, None, 600),),
             buckets={"main": (1000, 40)}),             # 4000 x 10 / 1000
        # next grant, positions 4000..7999: 1000 x 10 + 3000 x 4 = 22000 / 1000 = 22
        Step("U", 1, 10, (Svc(10, rsu={}, usu=4000),), q=(Q(OK, 4000, None, 600),),
             buckets={"main": (960, 22)}, events=(("usage", 40, 0),)),
        # positions 8000..11999 all at 4: 16
        Step("U", 2, 20, (Svc(10, rsu={}, usu=4000),), q=(Q(OK, 4000, None, 600),),
             buckets={"main": (938, 16)}, events=(("usage", 22, 0),)),
        Step("T", 3, 30, (Svc(10, usu=1500),), q=(Q(),), buckets={"main": (932, 0)},
             events=(("usage", 6, 0),)),               # 1500 x 4 / 1000
    ], unit=OCTETS, context=PS),

    Scenario("rounding_per_started_minute", voice(rounding=60), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(1, rsu=90),), q=(Q(OK, 90, None, 600),),
             buckets={"main": (1000, 240)}),             # 90 s -> 120 s x 2
        Step("U", 1, 100, (Svc(1, rsu=90, usu=61),), q=(Q(OK, 90, None, 600),),
             buckets={"main": (760, 240)}, events=(("usage", 240, 0),)),
        Step("T", 2, 150, (Svc(1, usu=1),), q=(Q(),), buckets={"main": (640, 0)},
             events=(("usage", 120, 0),)),               # 1 s -> 60 s x 2
    ]),

    Scenario("rounding_limits_partial_grant", voice(rounding=60), [MAIN(300)], [
        # 300 s would cost 600; 61..120 s cost 240, 121 s would cost 360 > 300
        Step("I", 0, 0, (Svc(1, rsu={}),), q=(Q(OK, 120, "terminate", 600),),
             buckets={"main": (300, 240)}),
        Step("T", 1, 100, (Svc(1, usu=100),), q=(Q(),), buckets={"main": (60, 0)},
             events=(("usage", 240, 0),)),
    ]),

    Scenario("multiple_rating_groups_share_money", data(rgs=(10, 20)), [MAIN(15)], [
        # RG10 reserves 10; RG20 gets what the remaining 5 buy: 500 octets, final
        Step("I", 0, 0, (Svc(10, rsu={}), Svc(20, rsu={})),
             q=(Q(OK, 1000, None, 600), Q(OK, 500, "terminate", 600)),
             buckets={"main": (15, 15)}),
        Step("U", 1, 100, (Svc(10, usu=1000), Svc(20, rsu={}, usu=500)),
             q=(Q(), Q(LIMIT, None, "terminate", None)), buckets={"main": (0, 0)},
             events=(("usage", 10, 0, {"rating_group": 10}),
                     ("usage", 5, 0, {"rating_group": 20}))),
        Step("T", 2, 200, (), buckets={"main": (0, 0)}),
    ], unit=OCTETS, context=PS),

    Scenario("termination_releases_every_reservation", data(rgs=(10, 20)), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(10, rsu={}), Svc(20, rsu={})),
             q=(Q(OK, 1000, None, 600), Q(OK, 1000, None, 600)), buckets={"main": (1000, 20)}),
        Step("U", 1, 10, (Svc(10, rsu={}, usu=100),), q=(Q(OK, 1000, None, 600),),
             buckets={"main": (999, 20)}, events=(("usage", 1, 0),)),
        # RG20 is not in the CCR-T; its reservation goes too; an RSU in a CCR-T grants nothing
        Step("T", 2, 20, (Svc(10, rsu={}, usu=300),), q=(Q(),), buckets={"main": (996, 0)},
             events=(("usage", 3, 0),)),
    ], unit=OCTETS, context=PS),

    # "one more unit" after a full grant is judged at the position after the grant
    Scenario("free_units_all_granted_is_final", voice(free_units=60, default_quota=60),
             [MAIN(0)], [
        # the 60 free seconds are all there is: nothing is left for another unit
        Step("I", 0, 0, (Svc(1, rsu={}),), q=(Q(OK, 60, "terminate", 600),),
             buckets={"main": (0, 0)}),
        Step("U", 1, 60, (Svc(1, rsu={}, usu=60),), q=(Q(LIMIT, None, "terminate"),),
             buckets={"main": (0, 0)}, events=(("usage", 0, 0),)),
    ]),

    Scenario("free_units_with_money_left_not_final", voice(free_units=60, default_quota=60),
             [MAIN(2)], [
        Step("I", 0, 0, (Svc(1, rsu={}),), q=(Q(OK, 60, None, 600),), buckets={"main": (2, 0)}),
        # 60 s wanted, 1 s (2 cents) affordable
        Step("U", 1, 60, (Svc(1, rsu={}, usu=60),), q=(Q(OK, 1, "terminate", 600),),
             buckets={"main": (2, 2)}, events=(("usage", 0, 0),)),
    ]),

    Scenario("tier_price_of_next_unit_decides_final", {"id": "t", "tariffs": [{
        "context": IMS, "unit": "time", "price": 1, "default_quota": 100,
        "tiers": [{"from_units": 0, "price": 1}, {"from_units": 100, "price": 1000}]}]},
        [MAIN(150)], [
        # 100 s cost 100; the 101st second costs 1000 > 50 left: final
        Step("I", 0, 0, (Svc(1, rsu={}),), q=(Q(OK, 100, "terminate", 600),),
             buckets={"main": (150, 100)}),
        Step("T", 1, 100, (Svc(1, usu=100),), q=(Q(),), buckets={"main": (50, 0)},
             events=(("usage", 100, 0),)),
    ]),

    Scenario("allowance_left_after_full_grant_not_final", voice(default_quota=60),
             [MAIN(0), B("mins", "time", 61)], [
        Step("I", 0, 0, (Svc(1, rsu={}),), q=(Q(OK, 60, None, 600),),
             buckets={"main": (0, 0), "mins": (61, 60)}),
        # 1 minute-allowance second left: 1 granted of 60 wanted, final
        Step("U", 1, 60, (Svc(1, rsu={}, usu=60),), q=(Q(OK, 1, "terminate", 600),),
             buckets={"main": (0, 0), "mins": (1, 1)},
             events=(("usage", 0, 0, {"impacts": [["mins", -60]]}),)),
    ]),

    Scenario("time_of_day_price_enquiries", BANDED, [MAIN(0)], [
        Step("E", 0, now, (Svc(1, rsu=100),), action=PRICE, q=(Q(),), cost=(price, "EUR"),
             buckets={"main": (0, 0)})
        for now, price in [
            (THU_0200L, 400), (THU_0900L, 1000), (FRI_0900L, 1000), (SAT_0900L, 400),
            (SUN_0900L, 400), (MON_0130L, 100), (MON_0559L, 100), (MON_0600L, 400),
            (MON_0800L, 1000), (MON_1800L, 400), (MON_1930L, 400), (WED_0900L, 1000)]
    ] + [
        # the Event-Timestamp, not the arrival time, picks the band
        Step("E", 0, THU_0200L, (Svc(1, rsu=100),), action=PRICE, event_time=MON_0900L,
             q=(Q(),), cost=(1000, "EUR"), buckets={"main": (0, 0)}),
    ]),

    Scenario("time_of_day_session", BANDED, [MAIN(5000)], [
        Step("I", 0, MON_0900L, (Svc(1, rsu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (5000, 1000)}),            # peak: 100 x 10
        # usage rated at the band of its start (the previous report, peak);
        # the new grant at the current band (off-peak, 4)
        Step("U", 1, MON_1930L, (Svc(1, rsu=100, usu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (4000, 400)},
             events=(("usage", 1000, 0, {"start": MON_0900L, "end": MON_1930L}),)),
        Step("T", 2, MON_1930L + 400, (Svc(1, usu=100),), q=(Q(),), buckets={"main": (3600, 0)},
             events=(("usage", 400, 0),)),
    ]),

    Scenario("ev_energy_and_idle_fee", EV_PLAN, [MAIN(5000)], [
        # 20 kWh x 30 c = 600 reserved
        Step("I", 0, 0, (Svc(rsu={}),), q=(Q(OK, 20000, None, 600),),
             buckets={"main": (5000, 600)}),
        # 8 kWh = 240; next 20 kWh still 600
        Step("U", 1, 1800, (Svc(rsu={}, usu=8000),), q=(Q(OK, 20000, None, 600),),
             buckets={"main": (4760, 600)},
             events=(("usage", 240, 0, {"start": 0, "end": 1800,
                                        "units": {"service_specific_units": 8000}}),)),
        # energy stopped at 1800; 300 s idle is within the 600 s grace: no fee
        Step("U", 2, 2100, (Svc(rsu={}, usu=0),), q=(Q(OK, 20000, None, 600),),
             buckets={"main": (4760, 600)}),
        # 3600 - 1800 - 600 = 1200 s = 20 started minutes x 50 = 1000
        Step("U", 3, 3600, (Svc(rsu={}, usu=0),), q=(Q(OK, 20000, None, 600),),
             buckets={"main": (3760, 600)},
             events=(("idle_fee", 1000, 0,
                      {"start": 2400, "end": 3600, "units": {"time": 1200}}),)),
        # 1300 s -> 22 started minutes, 2 new: 100
        Step("U", 4, 3700, (Svc(rsu={}, usu=0),), q=(Q(OK, 20000, None, 600),),
             buckets={"main": (3660, 600)},
             events=(("idle_fee", 100, 0, {"start": 3600, "end": 3700, "units": {"time": 120}}),)),
        # energy again: 5 kWh at positions 8000.. = 150; idle count restarts
        Step("U", 5, 4000, (Svc(rsu={}, usu=5000),), q=(Q(OK, 20000, None, 600),),
             buckets={"main": (3510, 600)}, events=(("usage", 150, 0),)),
        # CCR-T with zero energy: stopped at 4000, 4900 - 4000 - 600 = 300 s = 5 min = 250
        Step("T", 6, 4900, (Svc(usu=0),), q=(Q(),), buckets={"main": (3260, 0)},
             events=(("idle_fee", 250, 0, {"start": 4600, "end": 4900}),)),
    ], unit=SSU, context=EV),

    Scenario("money_quota", {"id": "money", "tariffs": [
        {"context": IMS, "unit": "money", "price": 0}]}, [MAIN(300)], [
        # RSU 500 x 10^-2 EUR = 500 cents; 300 available
        Step("I", 0, 0, (Svc(1, rsu={MONEY: (500, -2)}),), q=(Q(OK, 300, "terminate", 600),),
             buckets={"main": (300, 300)}),
        # USU 2 EUR = 200 cents; RSU 1 EUR: exactly what is left, final
        Step("U", 1, 10, (Svc(1, rsu={MONEY: (1, 0)}, usu={MONEY: (2, 0)}),),
             q=(Q(OK, 100, "terminate", 600),), buckets={"main": (100, 100)},
             events=(("usage", 200, 0, {"units": {"money": 200}}),)),
        # 12.345 EUR rounds up to 1235 cents; 100 paid, 1135 unpaid
        Step("T", 2, 20, (Svc(1, usu={MONEY: (12345, -3)}),), q=(Q(),), buckets={"main": (0, 0)},
             events=(("usage", 100, 1135),)),
    ], unit=MONEY),

    Scenario("unknown_rating_group_in_mscc", data(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(10, rsu={}), Svc(99, rsu={})), q=(Q(OK, 1000, None, 600), Q(RATING)),
             buckets={"main": (1000, 10)}),
        Step("U", 1, 10, (Svc(10, rsu={}, usu=500), Svc(99, rsu={}, usu=100)),
             q=(Q(OK, 1000, None, 600), Q(RATING)), buckets={"main": (995, 10)},
             events=(("usage", 5, 0),)),
        Step("T", 2, 20, (Svc(10, usu=200),), q=(Q(),), buckets={"main": (993, 0)},
             events=(("usage", 2, 0),)),
    ], unit=OCTETS, context=PS),

    Scenario("all_rating_groups_unknown", data(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(98, rsu={}), Svc(99, rsu={})), rc=RATING, q=(Q(RATING), Q(RATING)),
             failed_avp=("Rating-Group", 98), closed=True, open=False,
             buckets={"main": (1000, 0)}),
        Step("E", 0, 0, (Svc(97, rsu=100),), action=PRICE, rc=RATING, q=(Q(RATING),),
             failed_avp=("Rating-Group", 97), cost=(0, "EUR"), buckets={"main": (1000, 0)}),
    ], unit=OCTETS, context=PS),

    Scenario("unknown_service_identifier", {"id": "svc", "tariffs": [
        {"context": IMS, "unit": "time", "price": 2, "service_id": 1, "default_quota": 60}]},
        [MAIN(1000)], [
        Step("I", 0, 0, (Svc(None, rsu={}, sid=7),), rc=RATING, q=(Q(RATING),),
             failed_avp=("Service-Identifier", 7), closed=True, open=False,
             buckets={"main": (1000, 0)}),
        # command level, no Rating-Group nor Service-Identifier: the context is blamed
        Step("I", 0, 0, (Svc(None, rsu={}),), single=True, rc=RATING, q=(Q(RATING),),
             failed_avp=("Service-Context-Id", IMS), closed=True, open=False,
             buckets={"main": (1000, 0)}),
        Step("I", 0, 0, (Svc(None, rsu={}, sid=1),), q=(Q(OK, 60, None, 600),),
             buckets={"main": (1000, 120)}),
    ]),

    Scenario("unknown_service_context", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(1, rsu={}),), context="unknown@example.net", rc=RATING,
             failed_avp=("Service-Context-Id", "unknown@example.net"), open=False,
             buckets={"main": (1000, 0)}),
        Step("E", 0, 0, (Svc(1, rsu=10),), action=DD, context="unknown@example.net", rc=RATING,
             failed_avp=("Service-Context-Id", "unknown@example.net"),
             buckets={"main": (1000, 0)}),
    ]),

    Scenario("suspended_account_initial", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(1, rsu={}),), status="suspended", rc=DENIED, open=False,
             buckets={"main": (1000, 0)}),
    ]),

    Scenario("suspended_account_update", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(1, rsu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (1000, 200)}),
        # used units still debited (80 s = 160), no grant, session closed, released
        Step("U", 1, 50, (Svc(1, rsu=100, usu=80),), status="suspended", rc=DENIED, q=(Q(),),
             closed=True, buckets={"main": (840, 0)}, events=(("usage", 160, 0),)),
    ]),

    Scenario("suspended_account_termination", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(1, rsu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (1000, 200)}),
        Step("T", 1, 50, (Svc(1, usu=50),), status="suspended", q=(Q(),),
             buckets={"main": (900, 0)}, events=(("usage", 100, 0),)),
    ]),

    Scenario("closed_or_missing_account", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(1, rsu={}),), missing_account=True, rc=UNKNOWN_USER, open=False,
             buckets={"main": (1000, 0)}),
        Step("E", 0, 0, (Svc(1, rsu={}),), action=DD, missing_account=True, rc=UNKNOWN_USER,
             buckets={"main": (1000, 0)}),
        Step("I", 0, 0, (Svc(1, rsu={}),), status="closed", rc=UNKNOWN_USER, open=False,
             buckets={"main": (1000, 0)}),
        Step("E", 0, 0, (Svc(1, rsu={}),), action=REFUND, rc=UNKNOWN_USER,
             buckets={"main": (1000, 0)}),
    ]),

    Scenario("no_session", voice(), [MAIN(1000)], [
        Step("U", 1, 0, (Svc(1, rsu={}, usu=10),), rc=NO_SESSION, open=False,
             buckets={"main": (1000, 0)}),
        Step("T", 2, 0, (Svc(1, usu=10),), rc=NO_SESSION, open=False, closed=False,
             buckets={"main": (1000, 0)}),
    ]),

    Scenario("command_level_units", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(None, rsu=60),), single=True, q=(Q(OK, 60, None, 600),),
             buckets={"main": (1000, 120)}),
        Step("U", 1, 60, (Svc(None, rsu=60, usu=60),), single=True, q=(Q(OK, 60, None, 600),),
             buckets={"main": (880, 120)}, events=(("usage", 120, 0),)),
        Step("T", 2, 90, (Svc(None, usu=30),), single=True, q=(Q(),),
             buckets={"main": (820, 0)}, events=(("usage", 60, 0),)),
    ]),

    Scenario("command_level_4012_on_initial_closes", voice(), [MAIN(0)], [
        Step("I", 0, 0, (Svc(None, rsu=60),), single=True, rc=LIMIT,
             q=(Q(LIMIT, None, "terminate"),), closed=True, open=False,
             buckets={"main": (0, 0)}),
    ]),

    # -- believed bugs -----------------------------------------------------------
    Scenario("direct_debit_checks_band_at_now_but_charges_at_event_time", BANDED,
             [MAIN(500)], [
        # Event-Timestamp Mon 09:00 local: 100 s x 10 = 1000 > 500 -> 4012, nothing debited
        Step("E", 0, THU_0200L, (Svc(1, rsu=100),), action=DD, event_time=MON_0900L,
             q=(Q(LIMIT, None, "terminate"),), buckets={"main": (500, 0)}),
    ], ),

    Scenario("event_rate_describes_end_band_not_priced_band", BANDED, [MAIN(5000)], [
        Step("I", 0, MON_0900L, (Svc(1, rsu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (5000, 1000)}),
        Step("U", 1, MON_1930L, (Svc(1, rsu=100, usu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (4000, 400)},
             events=(("usage", 1000, 0, {"rate.price": 10, "rate.band": True}),)),
    ], ),

    Scenario("update_all_unknown_keeps_session_open", data(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(10, rsu={}),), q=(Q(OK, 1000, None, 600),),
             buckets={"main": (1000, 10)}),
        # RFC 8506 Table 6 (engine.py docstring): CCR-U not processed OK -> Idle
        Step("U", 1, 10, (Svc(99, rsu={}, usu=100),), rc=RATING, q=(Q(RATING),),
             failed_avp=("Rating-Group", 99), closed=True, open=False,
             buckets={"main": (1000, 0)}),
    ], unit=OCTETS, context=PS,
        ),

    Scenario("update_command_level_4012_keeps_session_open", voice(), [MAIN(200)], [
        Step("I", 0, 0, (Svc(None, rsu=100),), single=True, q=(Q(OK, 100, "terminate", 600),),
             buckets={"main": (200, 200)}),
        Step("U", 1, 100, (Svc(None, rsu=100, usu=100),), single=True, rc=LIMIT,
             q=(Q(LIMIT, None, "terminate"),), closed=True, open=False,
             buckets={"main": (0, 0)}, events=(("usage", 200, 0),)),
    ], ),

    Scenario("closed_account_update_leaks_reservation", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(1, rsu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (1000, 200)}),
        # session closed by the 5030, so its 200 reserved must be given back
        Step("U", 1, 50, (Svc(1, rsu=100),), status="closed", rc=UNKNOWN_USER, closed=True,
             open=False, q=(Q(),), buckets={"main": (1000, 0)}),
    ], ),

    Scenario("update_unknown_context_drops_session_keeps_reservation", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(1, rsu=100),), q=(Q(OK, 100, None, 600),),
             buckets={"main": (1000, 200)}),
        # Decision.error: session None (the ledger deletes it) but nothing released
        Step("U", 1, 50, (Svc(1, rsu=100),), context="unknown@example.net", rc=RATING,
             failed_avp=("Service-Context-Id", "unknown@example.net"), closed=True, open=False,
             buckets={"main": (1000, 0)}),
    ], ),

    Scenario("initial_on_open_session_drops_it", voice(), [MAIN(1000)], [
        Step("I", 0, 0, (Svc(None, rsu=60),), single=True, q=(Q(OK, 60, None, 600),),
             buckets={"main": (1000, 120)}),
        # refused (5004), the open session must stay as it was (the ledger stores
        # d.session; None deletes it and strands the 120 reserved)
        Step("I", 5, 70, (Svc(None, rsu=60),), single=True, rc=INVALID,
             failed_avp=("CC-Request-Number", 5), open=True, buckets={"main": (1000, 120)}),
    ], ),

    Scenario("termination_debits_before_releasing_other_reservations", data(rgs=(10, 20)),
             [MAIN(20)], [
        Step("I", 0, 0, (Svc(10, rsu={}), Svc(20, rsu={})),
             q=(Q(OK, 1000, None, 600), Q(OK, 1000, "terminate", 600)),
             buckets={"main": (20, 20)}),
        # over-use on RG10 (2000 octets = 20); every reservation ends with the
        # CCR-T, so all 20 are there to pay it: nothing unpaid
        Step("T", 1, 100, (Svc(10, usu=2000),), q=(Q(),), buckets={"main": (0, 0)},
             events=(("usage", 20, 0),)),
    ], unit=OCTETS, context=PS,
        ),
]


# -- runner ------------------------------------------------------------------------

def _units(x, unit: UnitType):
    if x is None:
        return None
    if isinstance(x, int):
        return {unit: x}
    return dict(x)


def _request(sc: Scenario, step: Step) -> CreditRequest:
    rtype = {"I": RequestType.INITIAL, "U": RequestType.UPDATE,
             "T": RequestType.TERMINATION, "E": RequestType.EVENT}[step.kind]
    services = [ServiceRequest(s.rg, s.sid, _units(s.rsu, sc.unit), _units(s.usu, sc.unit) or {})
                for s in step.svcs]
    return CreditRequest(f"ocs.test;{sc.name}", rtype, step.n, step.context or sc.context,
                         [IDENTITY], step.action, services, not step.single, step.event_time)


def _dig(d: dict, path: str):
    for part in path.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


class Books:
    """What the runner knows independently of the engine: money in and out."""

    def __init__(self, balance: Balance, credit_limit: int):
        self.kinds = {b.id: b.kind for b in balance.buckets}
        self.kinds.setdefault("main", "money")
        self.money_in = sum(b.amount for b in balance.buckets if b.kind == "money")
        self.debited = 0
        self.forfeited = 0
        self.credit_limit = credit_limit

    def check(self, balance: Balance, session, events: list, where: str) -> None:
        for e in events:
            money = sum(x for bid, x in e["impacts"] if self.kinds.get(bid) == "money")
            assert money == -e["amount"], (
                f"{where}: event money impacts {e['impacts']} != {e['amount']}")
            assert e["unpaid"] >= 0, where
            if e["type"] != "refund":
                assert e["amount"] >= 0, where
            self.debited += e["amount"]
        money = sum(b.amount for b in balance.buckets if b.kind == "money")
        assert money + self.debited + self.forfeited == self.money_in, (
            f"{where}: money not conserved: buckets {money} + debited {self.debited} + "
            f"forfeited {self.forfeited} != {self.money_in}")
        held: dict = {}
        if session is not None:
            for q in session.services.values():
                for bid, x in q.impacts:
                    assert x > 0, f"{where}: reservation impact {bid} {x}"
                    held[bid] = held.get(bid, 0) + x
        for b in balance.buckets:
            assert b.reserved >= 0, f"{where}: {b.id} reserved {b.reserved}"
            assert b.reserved == held.get(b.id, 0), (
                f"{where}: {b.id} reserved {b.reserved}, session holds {held.get(b.id, 0)}")
            floor = -self.credit_limit if b.id == "main" else 0
            assert b.amount >= floor, f"{where}: {b.id} amount {b.amount} < {floor}"

    def prune(self, balance: Balance, now: int) -> None:
        before = {b.id: b for b in balance.buckets}
        bal.prune(balance, now)
        after = {b.id for b in balance.buckets}
        self.forfeited += sum(b.amount for bid, b in before.items()
                              if bid not in after and b.kind == "money")


def _check_result(res, q: Q, unit: UnitType, where: str) -> None:
    got = (int(res.result_code), None if res.granted is None else dict(res.granted),
           None if res.final_unit is None else res.final_unit.action, res.validity_time)
    want = (q.rc, None if q.gsu is None else {unit: q.gsu}, q.fui, q.vt)
    assert got == want, f"{where}: (rc, GSU, FUI, VT) {got} != {want}"
    if q.redirect is not _ANY:
        assert res.final_unit.redirect_address == q.redirect, where
        assert res.final_unit.redirect_type == 2, where
    if q.filter_ids is not _ANY:
        assert res.final_unit.filter_ids == q.filter_ids, where
    if q.threshold is not _ANY:
        assert res.quota_threshold == q.threshold, where
    if q.holding is not _ANY:
        assert res.quota_holding_time == q.holding, where


def run_scenario(sc: Scenario) -> None:
    plan = decode_plan(encode_plan(plan_from_dict(sc.plan)))   # as stored by provisioning
    account = Account("acc-1", plan.id, plan.currency, "active", sc.credit_limit, (IDENTITY,))
    balance = Balance("acc-1", [Bucket(*b) for b in sc.buckets])
    books = Books(balance, sc.credit_limit)
    session = None
    for i, step in enumerate(sc.steps):
        where = f"{sc.name} step {i} ({step.kind}{step.n} @{step.now})"
        # through storage, as the ledger loads them
        balance = decode_balance(encode_balance(balance))
        if session is not None:
            session = decode_session(encode_session(session))
        if step.status is not None:
            account.status = step.status
        if step.topup:
            bal.main_bucket(balance).amount += step.topup
            books.money_in += step.topup
        if step.kind == "prune":
            books.prune(balance, step.now)
            events = []
        else:
            req = _request(sc, step)
            if step.missing_account:
                d = decide(req, None, None, None, session, step.now, CONFIG)
            else:
                d = decide(req, account, plan, balance, session, step.now, CONFIG)
            events = d.events

            assert int(d.result_code) == step.rc, f"{where}: result {d.result_code} != {step.rc}"
            assert len(d.services) == len(step.q), f"{where}: {len(d.services)} service results"
            for k, (res, q) in enumerate(zip(d.services, step.q)):
                _check_result(res, q, sc.unit, f"{where} MSCC {k}")
            assert d.failed_avp == step.failed_avp, f"{where}: Failed-AVP {d.failed_avp}"
            assert d.cost == step.cost, f"{where}: cost {d.cost}"
            assert d.check_balance == step.check_balance, f"{where}: check {d.check_balance}"
            closed = step.closed if step.closed is not None else step.kind == "T"
            assert d.session_closed == closed, f"{where}: session_closed {d.session_closed}"
            is_open = step.open if step.open is not None else (step.kind in "IU" and not closed)
            assert (d.session is not None) == is_open, f"{where}: session stored {d.session}"
            if d.session is not None and step.rc != INVALID:
                assert (d.session.number, d.session.updated_at) == (step.n, step.now), where
                if step.expires is not None:
                    assert d.session.expires_at == step.expires, (
                        f"{where}: expires {d.session.expires_at} != {step.expires}")

            got_events = [(e["type"], e["amount"], e["unpaid"]) for e in events]
            want_events = [tuple(e[:3]) for e in step.events]
            assert got_events == want_events, f"{where}: events {got_events} != {want_events}"
            for e, want in zip(events, step.events):
                assert e["account"] == "acc-1" and e["currency"] == "EUR", where
                assert e["request_number"] == step.n, where
                for key, value in (want[3] if len(want) > 3 else {}).items():
                    assert _dig(e, key) == value, (
                        f"{where}: event {key} {_dig(e, key)!r} != {value!r}")
            if step.kind != "E":
                session = d.session     # what the ledger stores (None: deleted)
            if step.prune:
                books.prune(balance, step.now)

        got = {b.id: (b.amount, b.reserved) for b in balance.buckets}
        assert got == step.buckets, f"{where}: buckets {got} != {step.buckets}"
        books.check(balance, session, events, where)


@pytest.mark.parametrize("sc", [
    pytest.param(sc, id=sc.name, marks=[pytest.mark.xfail(strict=True, reason="BUG: " + sc.bug)]
                 if sc.bug else [])
    for sc in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    run_scenario(sc)


def test_scenario_names_unique():
    names = [sc.name for sc in SCENARIOS]
    assert len(names) == len(set(names))


# -- properties ----------------------------------------------------------------

PROP_PLAN = plan_from_dict({"id": "prop", "tariffs": [
    # RG10: free units, rounding, two tiers
    {"context": PS, "unit": "total_octets", "rating_group": 10, "price": 3, "per": 100,
     "rounding": 50, "free_units": 300, "default_quota": 1000,
     "tiers": [{"from_units": 0, "price": 3}, {"from_units": 2000, "price": 1}]},
    # RG20: plain
    {"context": PS, "unit": "total_octets", "rating_group": 20, "price": 7, "per": 1000,
     "default_quota": 4000}]})

_usage = st.one_of(st.none(), st.integers(0, 6000))
_rsu = st.one_of(st.none(), st.just({}), st.integers(1, 5000))
_svc = st.tuples(st.sampled_from([10, 20]), _rsu, _usage)
_step = st.tuples(st.integers(0, 400), st.lists(_svc, min_size=0, max_size=2,
                                                unique_by=lambda s: s[0]),
                  st.integers(0, 50))


@settings(max_examples=200, deadline=None)
@given(main=st.integers(-100, 300), credit=st.integers(0, 200),
       allowance=st.integers(0, 3000), allowance_expires=st.one_of(st.none(), st.integers(1, 3000)),
       bonus=st.integers(0, 100), bonus_expires=st.one_of(st.none(), st.integers(1, 3000)),
       steps=st.lists(_step, min_size=1, max_size=8),
       final=st.lists(_svc, max_size=2, unique_by=lambda s: s[0]))
def test_random_sessions_conserve_money(main, credit, allowance, allowance_expires, bonus,
                                        bonus_expires, steps, final):
    """Whatever is used and asked, in any order: reservations never go negative
    and always equal what the session holds; money moves only by the debited
    event amounts; nothing goes below its floor; CCR-T releases everything."""
    main = max(main, -credit)
    account = Account("acc-1", "prop", "EUR", "active", credit, (IDENTITY,))
    balance = Balance("acc-1", [
        Bucket("main", "money", main, 0, 1 << 30),
        Bucket("bonus", "money", bonus, 0, 10, bonus_expires),
        Bucket("pack", "total_octets", allowance, 0, 100, allowance_expires, (10,))])
    books = Books(balance, credit)
    now = 0

    def request(rtype, number, svcs, at):
        services = [ServiceRequest(rg, None, None if rsu is None else
                                   ({} if rsu == {} else {OCTETS: rsu}),
                                   {} if usu is None else {OCTETS: usu}) for rg, rsu, usu in svcs]
        return CreditRequest("prop;1", rtype, number, PS, [IDENTITY], None, services, True)

    d = decide(request(RequestType.INITIAL, 0, [(10, {}, None), (20, {}, None)], now),
               account, PROP_PLAN, balance, None, now, CONFIG)
    session = d.session
    assert session is not None
    books.check(balance, session, d.events, "CCR-I")
    for number, (dt, svcs, topup) in enumerate(steps, start=1):
        now += dt
        if topup:
            bal.main_bucket(balance).amount += topup
            books.money_in += topup
        d = decide(request(RequestType.UPDATE, number, svcs, now), account, PROP_PLAN, balance,
                   session, now, CONFIG)
        assert d.result_code == OK
        session = d.session
        books.check(balance, session, d.events, f"CCR-U {number}")
        books.prune(balance, now)
        books.check(balance, session, [], f"prune {number}")
        for res in d.services:
            if res.granted is not None:
                assert res.result_code == OK and res.granted[OCTETS] > 0
            elif res.result_code == LIMIT:
                assert res.final_unit is not None
    now += 10
    d = decide(request(RequestType.TERMINATION, len(steps) + 1, final, now), account, PROP_PLAN,
               balance, session, now, CONFIG)
    assert d.session is None and d.session_closed
    books.check(balance, None, d.events, "CCR-T")
    assert all(b.reserved == 0 for b in balance.buckets)


@settings(max_examples=200, deadline=None)
@given(main=st.integers(0, 2000), units=st.lists(st.integers(0, 3000), min_size=1, max_size=6))
def test_direct_debits_all_or_nothing(main, units):
    """A direct debit either takes exactly its price or nothing (4012)."""
    plan = plan_from_dict(voice(rounding=60, free_units=0))
    account = Account("acc-1", plan.id, "EUR", "active", 0, (IDENTITY,))
    balance = Balance("acc-1", [Bucket("main", "money", main, 0, 1 << 30)])
    for n in units:
        before = balance.bucket("main").amount
        price = -(-n // 60) * 60 * 2 if n else 0      # started minutes x 60 s x 2 cents
        req = CreditRequest("e", RequestType.EVENT, 0, IMS, [IDENTITY], DD,
                            [ServiceRequest(1, None, {TIME: n} if n else {TIME: 0})], True)
        d = decide(req, account, plan, balance, None, 0, CONFIG)
        after = balance.bucket("main").amount
        if n == 0:
            price = 2 * 300   # no units: the default quota, 300 s
            n = 300
        if price <= before:
            assert d.services[0].granted == {TIME: n}
            assert after == before - price
            assert [e["amount"] for e in d.events] == [price]
        else:
            assert d.services[0].result_code == LIMIT and d.services[0].granted is None
            assert after == before and d.events == []


def test_same_rating_group_twice_never_grants_more_than_reserved():
    plan = plan_from_dict(data())
    account = Account("acc-1", plan.id, "EUR", "active", 0, (IDENTITY,))
    balance = Balance("acc-1", [Bucket("main", "money", 15, 0, 1 << 30)])
    req = CreditRequest("dup", RequestType.INITIAL, 0, PS, [IDENTITY], None,
                        [ServiceRequest(10, None, {}), ServiceRequest(10, None, {})], True)
    d = decide(req, account, plan, balance, None, 0, CONFIG)
    granted = sum(r.granted[OCTETS] for r in d.services if r.granted)
    # 1 cent per 100 octets: whatever the answer grants must be covered by reservations
    assert granted // 100 <= balance.bucket("main").reserved <= 15
    # (Service-Context-Id, Rating-Group) is unique in a request: the repeat is refused
    assert [r.result_code for r in d.services] == [2001, 5004]
