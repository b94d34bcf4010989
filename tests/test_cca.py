"""The fast CCA encoder gives exactly the bytes of the generic one, for every
kind of decision the engine makes."""

import itertools

import pytest

from ocs.charging.cca import AnswerEncoder
from ocs.charging.mapping import answer
from ocs.charging.model import FinalUnit
from ocs.charging.requests import Decision, ServiceResult
from ocs.charging.units import UnitType as U
from ocs.diameter.message import decode_message, request

FUIS = [None, FinalUnit(), FinalUnit("redirect", 2, "http://topup.example.net/", ("f1",)),
        FinalUnit("restrict_access", 2, "", ("restricted",), ("permit out ip from any to 10.0.0.1",))]


def ccr(dictionary, rtype, proxy=False, proxiable=True):
    avps = [("Session-Id", "pgw;1;2"), ("Origin-Host", "pgw"), ("Origin-Realm", "net"),
            ("Destination-Realm", "localdomain"), ("Auth-Application-Id", 4),
            ("Service-Context-Id", "32251@3gpp.org"), ("CC-Request-Type", rtype),
            ("CC-Request-Number", 7 if rtype != 1 else 0)]
    if proxy:
        avps += [("Proxy-Info", {"Proxy-Host": "relay1", "Proxy-State": b"s1"}),
                 ("Proxy-Info", {"Proxy-Host": "relay2", "Proxy-State": b"s2"})]
    m = request(dictionary, "Credit-Control-Request", avps, hop_by_hop=11, end_to_end=22)
    if not proxiable:
        m.flags &= ~0x40
    msg, errors = decode_message(m.encode(), dictionary)
    assert errors == []
    return msg


def services():
    grants = [None, {U.TOTAL_OCTETS: 10485760}, {U.TIME: 60}, {U.SERVICE_SPECIFIC_UNITS: 5000},
              {U.MONEY: 250}, {U.INPUT_OCTETS: 1, U.OUTPUT_OCTETS: 2}]
    for g, fui, rg, code, extra in itertools.product(grants, FUIS, (None, 10), (2001, 4012, 5031),
                                                     (False, True)):
        yield ServiceResult(rg, 7 if extra else None, code, g, 600 if g or extra else None, fui,
                            (U.TOTAL_OCTETS, 1048576) if extra else None, 30 if extra else None)


def decisions():
    svcs = list(services())
    for i in range(0, len(svcs), 3):
        yield Decision(services=svcs[i:i + 3], currency="EUR")
        yield Decision(services=svcs[i:i + 1], multiple_services=False, currency="SEK")
    yield Decision(services=[], currency="EUR")
    yield Decision(cost=(1234, "EUR"), currency="EUR")
    yield Decision(cost=(5, "JPY"), currency="JPY", multiple_services=False)
    yield Decision(check_balance=0)
    yield Decision(check_balance=1, services=svcs[:2])
    for code, failed in [(5030, None), (4010, None), (5031, ("Service-Context-Id", "x@y")),
                         (5031, ("Rating-Group", 99)), (5004, ("CC-Request-Number", 5)),
                         (5005, ("Subscription-Id", {"Subscription-Id-Type": 0,
                                                     "Subscription-Id-Data": ""})), (5002, None)]:
        yield Decision(result_code=code, failed_avp=failed, services=svcs[3:5], currency="EUR")


@pytest.mark.parametrize("rtype,proxy,proxiable", [(1, False, True), (2, True, True), (3, False, False),
                                                   (4, True, False)])
def test_fast_encoder_matches_generic_answer(dictionary, rtype, proxy, proxiable):
    msg = ccr(dictionary, rtype, proxy, proxiable)
    enc = AnswerEncoder(dictionary, "ocs.example.net", "example.net")
    n = 0
    for d in decisions():
        fast = enc.encode(msg, d)
        slow = answer(msg, d, "ocs.example.net", "example.net").encode()
        assert fast == slow, d
        n += 1
    assert n > 100
    decoded, errors = decode_message(fast, dictionary)
    assert errors == [] and decoded.hop_by_hop == 11 and decoded.end_to_end == 22
