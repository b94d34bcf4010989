"""`ocs demo`: the node on its embedded defaults, demo data, one charged session.

Loads `ocs/demo_data.toml` into the store (plans replaced, existing accounts
kept), starts the node, and acts as a P-GW and an SMSC over real Diameter on
loopback: a data session for alice (CCR-I, CCR-U, CCR-T), an SMS direct
debit, and bob running out of money (final units, then 4012). It prints each
answer and the rated events the session wrote, then keeps serving (Ctrl-C
stops) unless `--once`.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import sys
import time
import tomllib

from .charging import provision as prov
from .charging.records import decode_event
from .config import Config
from .diameter.capabilities import LocalPeer
from .net.client import connect
from .net.connection import NodeContext

MB = 1 << 20


def demo_data() -> dict:
    return tomllib.loads(importlib.resources.files("ocs").joinpath("demo_data.toml").read_text())


def load_demo(store) -> dict:
    data = demo_data()
    return store.write(lambda txn: prov.load_data(txn, data, int(time.time())))


def _ccr(client, session: str, rtype: int, number: int, subscriber, context: str, mscc=None, extra=()):
    avps = [("Session-Id", session), ("Destination-Realm", "localdomain"), ("Auth-Application-Id", 4),
            ("Service-Context-Id", context), ("CC-Request-Type", rtype), ("CC-Request-Number", number)]
    if subscriber:
        avps.append(("Subscription-Id", {"Subscription-Id-Type": subscriber[0],
                                         "Subscription-Id-Data": subscriber[1]}))
    avps += list(extra)
    if mscc is not None:
        avps += [("Multiple-Services-Indicator", 1), ("Multiple-Services-Credit-Control", mscc)]
    return client.build("Credit-Control-Request", avps)


def _describe(ans) -> str:
    parts = [f"Result-Code {ans.get('Result-Code')}"]
    for m in ans.find_all("Multiple-Services-Credit-Control"):
        gsu = m.find("Granted-Service-Unit")
        bits = [f"RG {m.get('Rating-Group')}", f"MSCC Result-Code {m.get('Result-Code')}"]
        if gsu is not None:
            bits.append("granted " + ", ".join(f"{a.name} {a.value}" for a in gsu.value))
        if m.get("Validity-Time") is not None:
            bits.append(f"Validity-Time {m.get('Validity-Time')} s")
        fui = m.find("Final-Unit-Indication")
        if fui is not None:
            server = fui.find("Redirect-Server")
            bits.append(f"final units: {fui.find('Final-Unit-Action').label}"
                        + (f" to {server.get('Redirect-Server-Address')}" if server else ""))
        parts.append("; ".join(bits))
    gsu = ans.find("Granted-Service-Unit")
    if gsu is not None:
        parts.append("granted " + ", ".join(f"{a.name} {a.value}" for a in gsu.value))
    return " | ".join(parts)


async def drive(host: str, port: int, dictionary, out=sys.stdout) -> list:
    """The demo traffic; returns the session ids it used."""
    node = NodeContext(LocalPeer("demo-pgw.localdomain", "localdomain"), dictionary)
    client = await connect(host, port, node)
    stamp = time.time_ns() // 1000        # Session-Ids unique across runs (RFC 6733 §8.8)
    alice, bob = (0, "46700000001"), (0, "46700000002")
    data = "32251@3gpp.org"
    s1, s2, s3 = (f"demo-pgw.localdomain;{stamp};{n}" for n in (1, 2, 3))
    steps = [
        ("alice CCR-I  ", s1, 1, 0, alice, data, {"Rating-Group": 10, "Requested-Service-Unit": []}),
        ("alice CCR-U  ", s1, 2, 1, alice, data, {"Rating-Group": 10, "Requested-Service-Unit": [],
                                                  "Used-Service-Unit": {"CC-Total-Octets": 5 * MB}}),
        ("alice CCR-T  ", s1, 3, 2, alice, data, {"Rating-Group": 10,
                                                  "Used-Service-Unit": {"CC-Total-Octets": 3 * MB}}),
        ("alice SMS    ", s2, 4, 0, alice, "32274@3gpp.org", None),
        ("bob   CCR-I  ", s3, 1, 0, bob, data, {"Rating-Group": 10, "Requested-Service-Unit": []}),
        ("bob   CCR-U  ", s3, 2, 1, bob, data, {"Rating-Group": 10, "Requested-Service-Unit": [],
                                                "Used-Service-Unit": {"CC-Total-Octets": 25 * MB}}),
        ("bob   CCR-T  ", s3, 3, 2, bob, data, {"Rating-Group": 10,
                                                "Used-Service-Unit": {"CC-Total-Octets": 0}}),
    ]
    try:
        for label, sid, rtype, number, sub, ctx, mscc in steps:
            extra = [("Requested-Action", 0), ("Requested-Service-Unit",
                                                {"CC-Service-Specific-Units": 1})] if rtype == 4 else []
            ans = await client.request(_ccr(client, sid, rtype, number, sub, ctx, mscc, extra))
            print(f"{label} {_describe(ans)}", file=out)
    finally:
        await client.close()
    return [s1, s2, s3]


def print_events(store, sessions: list, out=sys.stdout) -> None:
    with store.read() as txn:
        events = [decode_event(v) for _, v in txn.items("outbox")]
    print("rated events written to the outbox:", file=out)
    for e in events:
        if e.get("session") in sessions:
            print("  " + json.dumps({k: e[k] for k in ("event_id", "type", "account", "rating_group",
                                                       "units", "amount", "unpaid", "currency",
                                                       "impacts", "balance_after")}), file=out)


def run(config: Config, once: bool = False) -> int:
    from .service import open_store, serve, setup_logging
    setup_logging("warning", config.log.format)
    store = open_store(config)
    counts = load_demo(store)
    print(f"demo data: {counts['plans']} plans, {counts['accounts']} new accounts "
          f"({counts['existing']} already there) in {config.store.path}")

    async def main() -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve(config, ready, stop, store))
        await asyncio.wait([asyncio.create_task(ready.wait()), task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        print(f"node listening on {config.listen.address}:{config.listen.port}")
        from .service import node_context
        sessions = await drive(config.listen.address, config.listen.port, node_context(config).dictionary)
        print_events(store, sessions)
        if once:
            stop.set()
        else:
            print("serving; Ctrl-C stops. Try: .venv/bin/ocs accounts show alice")
        await task

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
    return 0
