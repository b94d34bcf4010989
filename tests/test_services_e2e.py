"""The services of the demo plans end to end over loopback Diameter (the node in
process with a store in a temp dir, our client as the gateway): an IMS voice call
on Ro with its 3GPP Service-Information, an SMS event with SMS-Information, and
an EV DC charging session billed per watt-hour, then per idle minute."""

import asyncio

import pytest

from ocs.config import Config, ListenConfig, StoreConfig
from ocs.demo import load_demo
from ocs.diameter.capabilities import LocalPeer
from ocs.net.client import connect
from ocs.net.connection import NodeContext
from ocs.service import node_context, open_store, serve


class Clock:
    """The node's wall clock, moved by the test (the EV idle fee counts minutes)."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def node(tmp_path):
    clock = Clock(1_764_000_000.0)                     # a Monday 16:00 UTC
    config = Config(listen=ListenConfig("127.0.0.1", 0), store=StoreConfig(path=str(tmp_path / "s")))
    return config, clock


def run(config, clock, scenario):
    async def main():
        store = open_store(config)
        load_demo(store)
        ready, stop = asyncio.Event(), asyncio.Event()
        servers = []
        try:
            task = asyncio.create_task(serve(config, ready, stop, store, clock, servers.append))
            await asyncio.wait_for(ready.wait(), 10)
            client = await connect("127.0.0.1", servers[0].port, NodeContext(
                LocalPeer("gw.example.net", "example.net"), node_context(config).dictionary))
            try:
                return await scenario(client, store)
            finally:
                await client.close()
                stop.set()
                await task
        finally:
            store.close()
    return asyncio.run(main())


def ccr(client, sid, rtype, number, subscriber, context, extra=()):
    kind, data = subscriber
    return client.build("Credit-Control-Request", [
        ("Session-Id", sid), ("Destination-Realm", "localdomain"), ("Auth-Application-Id", 4),
        ("Service-Context-Id", context), ("CC-Request-Type", rtype), ("CC-Request-Number", number),
        ("Subscription-Id", {"Subscription-Id-Type": kind, "Subscription-Id-Data": data}), *extra])


def main_money(store, account):
    from ocs.charging.records import decode_balance
    with store.read() as t:
        return decode_balance(t.get("balances", account.encode())).bucket("main").amount


def test_ims_voice_call_and_sms(node):
    config, clock = node
    ims = ("Service-Information", {"IMS-Information": {
        "Node-Functionality": 0, "Role-Of-Node": 0, "User-Session-Id": "call-1@ims",
        "Calling-Party-Address": "sip:alice@ims.example.org", "Called-Party-Address": "tel:+46700000002"}})
    alice = (2, "sip:Alice@IMS.example.org")          # SIP URI, matched case-insensitively

    async def scenario(client, store):
        out = []
        mscc = lambda used=None, rsu=True: ("Multiple-Services-Credit-Control", {
            **({"Requested-Service-Unit": []} if rsu else {}),
            **({"Used-Service-Unit": {"CC-Time": used}} if used is not None else {})})
        a = await client.request(ccr(client, "call-1", 1, 0, alice, "32260@3gpp.org", [ims, mscc()]))
        m = a.find("Multiple-Services-Credit-Control")
        out.append((a.get("Result-Code"), m.find("Granted-Service-Unit").get("CC-Time")))
        clock.now += 45
        a = await client.request(ccr(client, "call-1", 3, 1, alice, "32260@3gpp.org",
                                     [ims, mscc(45, rsu=False)]))
        out.append((a.get("Result-Code"),))
        sms = ("Service-Information", {"SMS-Information": {"SMS-Node": 3, "SM-Message-Type": 0}})
        a = await client.request(ccr(client, "sms-1", 4, 0, (0, "46700000001"), "32274@3gpp.org", [
            ("Requested-Action", 0), ("Requested-Service-Unit", {"CC-Service-Specific-Units": 1}), sms]))
        out.append((a.get("Result-Code"), a.find("Granted-Service-Unit").get("CC-Service-Specific-Units")))
        out.append(main_money(store, "alice"))
        return out

    # Monday 16:00 UTC is 17:00 in the plan's UTC+1: peak, 2 cents per 6 s;
    # 45 s rounds up to 48 s = 8 x 2 = 16 cents; the SMS costs 9
    assert run(config, clock, scenario) == [(2001, 60), (2001,), (2001, 1), 2000 - 16 - 9]


def test_ev_charging_energy_then_idle_fee(node):
    config, clock = node
    fleet = (3, "fleet7@ev.example.org")
    ctx = "ev-charging@ocs.example.org"

    async def scenario(client, store):
        out = []

        def mscc(wh=None, rsu=True):
            return ("Multiple-Services-Credit-Control", {
                **({"Requested-Service-Unit": []} if rsu else {}),
                **({"Used-Service-Unit": {"CC-Service-Specific-Units": wh}} if wh is not None else {})})
        a = await client.request(ccr(client, "ev-1", 1, 0, fleet, ctx, [mscc()]))
        m = a.find("Multiple-Services-Credit-Control")
        out.append((m.get("Result-Code"), m.find("Granted-Service-Unit").get("CC-Service-Specific-Units"),
                    m.get("Validity-Time")))
        for n, wh in ((1, 5000), (2, 5000), (3, 0)):     # 10 kWh, then the car sits there
            clock.now += 60 if wh else 600                # energy stops; 10 minutes later
            a = await client.request(ccr(client, "ev-1", 2, n, fleet, ctx, [mscc(wh)]))
            out.append(a.get("Result-Code"))
        clock.now += 120
        a = await client.request(ccr(client, "ev-1", 3, 4, fleet, ctx, [mscc(0, rsu=False)]))
        out.append(a.get("Result-Code"))
        out.append(main_money(store, "ev-fleet-7"))
        from ocs.charging.records import decode_event
        with store.read() as t:
            events = [decode_event(v) for _, v in t.items("outbox")]
        out.append([(e["type"], e["units"], e["amount"]) for e in events if e["session"] == "ev-1"])
        return out

    # 5000 Wh at 39 cents/kWh = 195 cents, twice; energy stopped at the second
    # report; idle from then: 600 s at the third report, 720 s at the CCR-T;
    # minus 300 s grace: 5 minutes, then 7 minutes in all: 50 + 20 cents
    assert run(config, clock, scenario) == [
        (2001, 5000, 60), 2001, 2001, 2001, 2001, 5000 - 390 - 70,
        [("usage", {"service_specific_units": 5000}, 195),
         ("usage", {"service_specific_units": 5000}, 195),
         ("idle_fee", {"time": 300}, 50),
         ("idle_fee", {"time": 120}, 20)]]
