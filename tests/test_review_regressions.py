"""Defects found by an independent review, each pinned by the smallest case
that showed it (money from outside the bounds a record can hold, Tcc per
quota, late duplicates, bucket ids, plan validation, refunds)."""

import tempfile

import pytest

from ocs.charging import provision as prov
from ocs.charging.engine import decide
from ocs.charging.ledger import Ledger
from ocs.charging.mapping import RequestRefused, credit_request
from ocs.charging.model import Account, Balance, Bucket
from ocs.charging.records import RecordError, decode_balance, plan_from_dict
from ocs.charging.rating import cost
from ocs.charging.requests import CreditRequest, RequestedAction, RequestType, ServiceRequest
from ocs.charging.units import UnitType as U
from ocs.diameter.message import decode_message, request
from ocs.store.lmdb import LmdbStore

DATA = {"id": "p", "currency": "EUR", "tariffs": [
    {"context": "ctx", "rating_group": 10, "unit": "total_octets", "price": 1, "per": 1000,
     "default_quota": 1000, "validity_time": 3600},
    {"context": "ctx", "rating_group": 20, "unit": "total_octets", "price": 1, "per": 1000,
     "default_quota": 1000, "validity_time": 60}]}


def ccr(dictionary, mscc=None, extra=()):
    avps = [("Session-Id", "s"), ("Origin-Host", "gw"), ("Origin-Realm", "net"),
            ("Destination-Realm", "localdomain"), ("Auth-Application-Id", 4),
            ("Service-Context-Id", "ctx"), ("CC-Request-Type", 1), ("CC-Request-Number", 0),
            ("Subscription-Id", {"Subscription-Id-Type": 0, "Subscription-Id-Data": "1"}), *extra]
    if mscc is not None:
        avps.append(("Multiple-Services-Credit-Control", mscc))
    msg, errors = decode_message(request(dictionary, "Credit-Control-Request", avps).encode(), dictionary)
    assert errors == []
    return msg


@pytest.mark.parametrize("money,field", [
    ({"Unit-Value": {"Value-Digits": 1, "Exponent": 10 ** 7}}, "Exponent"),
    ({"Unit-Value": {"Value-Digits": 1, "Exponent": -19}}, "Exponent"),
    ({"Unit-Value": {"Value-Digits": -100}}, "Value-Digits"),
])
def test_unrateable_money_is_refused_with_5004_at_once(dictionary, money, field):
    with pytest.raises(RequestRefused) as e:
        credit_request(ccr(dictionary, {"Requested-Service-Unit": {"CC-Money": money}}))
    assert e.value.result_code == 5004 and e.value.failed_avp[0] == field


def test_usu_sums_beyond_2_62_are_refused(dictionary):
    usu = {"CC-Total-Octets": (1 << 62) - 1}
    with pytest.raises(RequestRefused) as e:
        credit_request(ccr(dictionary, [("Used-Service-Unit", usu), ("Used-Service-Unit", usu)]))
    assert e.value.result_code == 5004 and e.value.failed_avp[0] == "CC-Total-Octets"


def test_money_sums_over_exponents_and_other_currencies_are_refused(dictionary):
    usus = [("Used-Service-Unit", {"CC-Money": {"Unit-Value": {"Value-Digits": 100, "Exponent": -2}}}),
            ("Used-Service-Unit", {"CC-Money": {"Unit-Value": {"Value-Digits": 5}}})]
    req = credit_request(ccr(dictionary, usus))
    assert req.services[0].used[U.MONEY] == (600, -2, None)        # 1.00 + 5 = 6.00
    plan = plan_from_dict({"id": "m", "tariffs": [{"context": "ctx", "unit": "money", "price": 1}]})
    account = Account("a", "m", "EUR")
    balance = Balance("a", [Bucket("main", "money", 1000, 0, 1 << 30)])
    jpy = CreditRequest("s", RequestType.EVENT, 0, "ctx", ["e164:1"], RequestedAction.DIRECT_DEBITING,
                        [ServiceRequest(None, None, {U.MONEY: (500, 0, 392)})], False)
    d = decide(jpy, account, plan, balance, None, 0)
    assert int(d.result_code) == 5004 and d.failed_avp[0] == "CC-Money"
    assert balance.buckets[0].amount == 1000 and d.events == []


def test_msi_with_command_level_units_answers_at_command_level(dictionary):
    req = credit_request(ccr(dictionary, None, [("Multiple-Services-Indicator", 1),
                                                ("Requested-Service-Unit", [])]))
    assert req.multiple_services is False and len(req.services) == 1


def test_tcc_follows_each_quota_not_the_last_request():
    plan = plan_from_dict(DATA)
    account = Account("a", "p", "EUR", identities=("e164:1",))
    balance = Balance("a", [Bucket("main", "money", 1000, 0, 1 << 30)])
    i = CreditRequest("s", RequestType.INITIAL, 0, "ctx", ["e164:1"],
                      services=[ServiceRequest(10, None, {}), ServiceRequest(20, None, {})])
    d = decide(i, account, plan, balance, None, 100)
    assert d.session.expires_at == 100 + 2 * 3600
    u = CreditRequest("s", RequestType.UPDATE, 1, "ctx", [],
                      services=[ServiceRequest(20, None, {}, {U.TOTAL_OCTETS: 500})])
    d = decide(u, account, plan, balance, d.session, 110)
    assert d.session.expires_at == 100 + 2 * 3600      # RG 10's grant is still supervised


def test_late_copies_below_the_window_are_never_charged_again():
    with LmdbStore(tempfile.mkdtemp()) as store:
        store.write(lambda t: prov.load_data(t, {"plans": [DATA], "accounts": [
            {"id": "a", "plan": "p", "identities": ["e164:1"], "buckets": [{"id": "main", "amount": 100000}]}]}, 0))
        ledger = Ledger()

        def send(rtype, n, used=None):
            svc = ServiceRequest(10, None, {}, {} if used is None else {U.TOTAL_OCTETS: used})
            r = CreditRequest("s", rtype, n, "ctx", ["e164:1"], services=[svc])
            return store.write(lambda t: ledger.credit_control(t, r, 100 + n, lambda d: b"%d" % d.result_code))

        send(RequestType.INITIAL, 0)
        for n in range(1, 41):
            send(RequestType.UPDATE, n, 1000)

        def money():
            with store.read() as t:
                return decode_balance(t.get("balances", b"a")).bucket("main").amount
        before = money()
        assert before == 100000 - 40
        for n in (4, 5, 8, 39):                 # below the window, and inside it
            assert send(RequestType.UPDATE, n, 1000)[0] == b"5004"
        assert money() == before


def test_bucket_ids_are_never_reused_and_kinds_must_match():
    with LmdbStore(tempfile.mkdtemp()) as store:
        store.write(lambda t: prov.load_data(t, {"plans": [DATA], "accounts": [
            {"id": "a", "plan": "p", "identities": ["e164:1"], "buckets": [{"id": "main", "amount": 10}]}]}, 0))
        store.write(lambda t: prov.top_up(t, "a", 500, 0, "total_octets", expires=50))
        store.write(lambda t: prov.top_up(t, "a", 700, 100, "total_octets", expires=500))
        with store.read() as t:
            ids = [b.id for b in decode_balance(t.get("balances", b"a")).buckets]
        assert ids == ["main", "b2"]        # b1 lapsed and was dropped; its id is not used again
        with pytest.raises(prov.ProvisioningError, match="holds money, not total_octets"):
            store.write(lambda t: prov.top_up(t, "a", 5, 0, "total_octets", bucket_id="main"))
        with pytest.raises(prov.ProvisioningError, match="unique"):
            store.write(lambda t: prov.load_data(t, {"accounts": [
                {"id": "b", "plan": "p", "buckets": [{"id": "x", "amount": 1}, {"id": "x", "amount": 2}]}]}, 0))
        with pytest.raises(prov.ProvisioningError, match="prices in EUR"):
            store.write(lambda t: prov.load_data(t, {"accounts": [
                {"id": "c", "plan": "p", "currency": "SEK"}]}, 0))


def test_plan_validation_and_bands_past_midnight():
    with pytest.raises(RecordError, match="price is required"):
        plan_from_dict({"id": "x", "tariffs": [{"context": "c", "unit": "time"}]})
    with pytest.raises(RecordError, match="increasing"):
        plan_from_dict({"id": "x", "tariffs": [{"context": "c", "unit": "time", "price": 1, "tiers": [
            {"from_units": 60, "price": 1}, {"from_units": 0, "price": 2}]}]})
    night = plan_from_dict({"id": "n", "tariffs": [{"context": "c", "unit": "time", "price": 10, "bands": [
        {"days": [4], "start": "22:00", "end": "06:00", "price": 1}]}]})      # Friday night
    t = night.tariffs[0]
    friday = 1 * 86400                           # 1970-01-02 was a Friday
    assert cost(t, night, 1, 0, friday + 23 * 3600) == 1          # Friday 23:00
    assert cost(t, night, 1, 0, friday + 86400 + 2 * 3600) == 1   # Saturday 02:00
    assert cost(t, night, 1, 0, friday + 86400 + 7 * 3600) == 10  # Saturday 07:00
    assert cost(t, night, 1, 0, friday + 2 * 3600) == 10          # Friday 02:00: Thursday's night


def test_a_refund_names_what_it_refunds():
    plan = plan_from_dict(DATA)
    account = Account("a", "p", "EUR")
    balance = Balance("a", [Bucket("main", "money", 0, 0, 1 << 30)])
    r = CreditRequest("s", RequestType.EVENT, 0, "ctx", ["e164:1"], RequestedAction.REFUND_ACCOUNT,
                      [ServiceRequest(10, None, {})], False)
    d = decide(r, account, plan, balance, None, 0)
    assert int(d.result_code) == 5005 and balance.buckets[0].amount == 0 and d.events == []
